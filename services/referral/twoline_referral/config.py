"""Referral settings (env prefix TWOLINE_REFERRAL_): the bridge holds a user in both zone accounts,
and the routing table of the second-line office queues."""

from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from twoline_referral.domain import normalise_place
from twoline_shared.auth import Agency
from twoline_shared.codes import is_language
from twoline_shared.settings import ServiceSettings


class Office(BaseModel):
    """One office queue of an agency: the languages it counsels in and the municipalities it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    languages: list[str] = Field(default_factory=list)
    municipalities: list[str] = Field(default_factory=list)

    @field_validator("languages")
    @classmethod
    def _iso_639_1(cls, value: list[str]) -> list[str]:
        unknown = [code for code in value if not is_language(code)]
        if unknown:
            raise ValueError(f"office languages must be ISO 639-1 codes, not {unknown}")
        return value


# ---------------------------------------------------------------- the demo routing table

# Municipalities (with their French, Dutch and English names) per office; the same areas for both
# agencies. Matching ignores case, accents, hyphens and spaces (domain.normalise_place).
_BRUSSELS = [
    "Bruxelles", "Brussel", "Brussels", "Anderlecht", "Auderghem", "Oudergem",
    "Berchem-Sainte-Agathe", "Sint-Agatha-Berchem", "Etterbeek", "Evere", "Forest", "Vorst",
    "Ganshoren", "Ixelles", "Elsene", "Jette", "Koekelberg", "Molenbeek-Saint-Jean",
    "Sint-Jans-Molenbeek", "Saint-Gilles", "Sint-Gillis", "Saint-Josse-ten-Noode",
    "Sint-Joost-ten-Node", "Schaerbeek", "Schaarbeek", "Uccle", "Ukkel",
    "Watermael-Boitsfort", "Watermaal-Bosvoorde", "Woluwe-Saint-Lambert",
    "Sint-Lambrechts-Woluwe", "Woluwe-Saint-Pierre", "Sint-Pieters-Woluwe", "Leuven", "Louvain",
    "Vilvoorde", "Wavre", "Waver",
]  # fmt: skip
_ANTWERP = [
    "Antwerpen", "Antwerp", "Anvers", "Mechelen", "Malines", "Lier", "Turnhout", "Hasselt",
    "Genk",
]  # fmt: skip
_GHENT = [
    "Gent", "Ghent", "Gand", "Brugge", "Bruges", "Aalst", "Alost", "Kortrijk", "Courtrai",
    "Oostende", "Ostende", "Sint-Niklaas",
]  # fmt: skip
_LIEGE = [
    "Liège", "Luik", "Lüttich", "Verviers", "Seraing", "Herstal", "Huy", "Eupen",
]  # fmt: skip
_CHARLEROI = [
    "Charleroi", "Mons", "Bergen", "Namur", "Namen", "La Louvière", "Tournai", "Doornik",
]  # fmt: skip


def _table(languages: dict[str, list[str]]) -> dict[str, Office]:
    areas = {
        "brussels": _BRUSSELS,
        "antwerp": _ANTWERP,
        "ghent": _GHENT,
        "liege": _LIEGE,
        "charleroi": _CHARLEROI,
    }
    return {
        name: Office(languages=languages[name], municipalities=municipalities)
        for name, municipalities in areas.items()
    }


# Different language lists per office, so that the language rule is visible in the demo
# (e.g. Charleroi counsels in neither Arabic nor Dutch; Fedasil Liège adds Russian).
DEMO_OFFICES: dict[str, dict[str, Office]] = {
    Agency.IMMIGRATION_OFFICE.value: _table(
        {
            "brussels": ["fr", "nl", "en", "ar", "es"],
            "antwerp": ["nl", "en", "fr", "ar"],
            "ghent": ["nl", "en", "fr", "ps"],
            "liege": ["fr", "en", "ar", "de"],
            "charleroi": ["fr", "en"],
        }
    ),
    Agency.FEDASIL.value: _table(
        {
            "brussels": ["fr", "nl", "en", "ar", "fa", "ps"],
            "antwerp": ["nl", "en", "ar", "so"],
            "ghent": ["nl", "en", "fr", "ti"],
            "liege": ["fr", "en", "ar", "ru"],
            "charleroi": ["fr", "en", "es"],
        }
    ),
}


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_REFERRAL_", extra="ignore")

    port: int = 8003
    database_url: str = "sqlite:///.twoline/referral.db"
    # Link "firstline": consumes intake and consent facts, asks intake for disclosure packages
    # and the consent service for the consents it decides on, publishes audit records.
    nats_user: str = "referral-fl"
    # Link "secondline": publishes routed tracks, consumes the case service's status facts.
    nats_sl_user: str = "referral-sl"
    nats_sl_password: SecretStr = SecretStr("")
    # How long a referral waits for intake's disclosure package before answering 503.
    disclosure_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    # How long a decision (a referral, a key, a joint-review link) waits for the consent
    # service's answer before refusing with 503.
    consent_timeout_seconds: float = Field(default=5.0, gt=0, le=30)

    # agency -> office -> its languages and municipalities; table order breaks ties in routing.
    # Env: TWOLINE_REFERRAL_ROUTING_OFFICES='{"fedasil": {"brussels": {"languages": [...], ...}}}'
    routing_offices: dict[str, dict[str, Office]] = DEMO_OFFICES
    # agency -> the office queue a track goes to when no finer routing rule applies.
    routing_default_office: dict[str, str] = {
        Agency.IMMIGRATION_OFFICE.value: "brussels",
        Agency.FEDASIL.value: "brussels",
    }

    @field_validator("routing_default_office")
    @classmethod
    def _every_agency_routed(cls, value: dict[str, str]) -> dict[str, str]:
        missing = sorted(a.value for a in Agency if not value.get(a.value))
        if missing:
            raise ValueError(f"routing_default_office needs an office for {missing}")
        return value

    @field_validator("routing_offices")
    @classmethod
    def _known_agencies_unambiguous_places(
        cls, value: dict[str, dict[str, Office]]
    ) -> dict[str, dict[str, Office]]:
        agencies = {a.value for a in Agency}
        unknown = sorted(set(value) - agencies)
        if unknown:
            raise ValueError(f"routing_offices names unknown agencies {unknown}")
        for agency, offices in value.items():
            seen: dict[str, str] = {}
            for name, office in offices.items():
                if not name:
                    raise ValueError(f"routing_offices[{agency!r}] has an office without a name")
                for place in office.municipalities:
                    key = normalise_place(place)
                    if not key:
                        raise ValueError(f"routing_offices[{agency!r}][{name!r}]: empty place")
                    if seen.setdefault(key, name) != name:
                        raise ValueError(
                            f"routing_offices[{agency!r}]: {place!r} is served by both "
                            f"{seen[key]!r} and {name!r}"
                        )
        return value

    @model_validator(mode="after")
    def _default_offices_exist(self) -> "Settings":
        for agency, office in self.routing_default_office.items():
            if office not in self.routing_offices.get(agency, {}):
                raise ValueError(
                    f"routing_default_office[{agency!r}] = {office!r} is not in routing_offices"
                )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
