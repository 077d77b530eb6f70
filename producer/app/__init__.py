"""The app: settings in groups, and the wiring of features, adapters and the event loop."""
