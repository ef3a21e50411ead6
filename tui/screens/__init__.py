"""Screens of the chat app, one per file; `messages` holds what they ask of the app."""
