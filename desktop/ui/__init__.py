"""The desktop app's Qt code: tray, dashboard and their widgets (the only package that imports Qt)."""
