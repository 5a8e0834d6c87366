"""Moodle LMS: the web-services REST client (``client.py``), and the assets and event payloads built on it."""
