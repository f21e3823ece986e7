"""/docs (Swagger UI) and /redoc work on a network without Internet access.

Their pages name no URL but the service's own, and every asset they name is served by the
service itself (from the kernel's installed package), with the right content type.
"""

import re

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import SERVICES, bare_app

PAGES = ["/docs", "/redoc"]
# Every URL a page can name: attributes, script strings, CSS url(...).
ATTRIBUTE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
SCRIPT_URL = re.compile(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""")
EXPECTED_TYPE = {
    ".js": "javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def named_urls(html: str) -> set[str]:
    return set(ATTRIBUTE.findall(html)) | set(SCRIPT_URL.findall(html))


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("name", SERVICES)
def test_the_docs_page_names_only_the_services_own_urls(name, page):
    client = TestClient(bare_app(name))
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No absolute URL at all: no CDN, no fonts, no validator badge.
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", html), "the page names another host"
    urls = named_urls(html)
    assert "/openapi.json" in urls
    assert any(u.endswith(".js") for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("name", SERVICES)
def test_every_asset_a_docs_page_names_is_served_with_its_content_type(name, page):
    client = TestClient(bare_app(name))
    for url in named_urls(client.get(page).text):
        response = client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert EXPECTED_TYPE[suffix] in response.headers["content-type"], url
        assert response.content, url


def test_swagger_ui_asks_no_public_validator():
    """Swagger UI's validator badge would be a request to the Internet for every page view."""
    html = TestClient(bare_app("intake")).get("/docs").text
    assert '"validatorUrl": null' in html
