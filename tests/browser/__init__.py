"""Headless-Chromium checks of the built book (pytest -m browser; make browser-test)."""
