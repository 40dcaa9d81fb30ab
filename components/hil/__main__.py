"""``python -m components.hil stub pv|battery|evse ...`` / ``python -m components.hil csms ...``."""

from components.hil.cli import main

main()
