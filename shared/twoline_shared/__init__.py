"""twoline shared kernel: what every service needs exactly once."""
