"""Passive sensor that finds TikTok use on government Wi-Fi segments."""

__version__ = "0.1.0"
