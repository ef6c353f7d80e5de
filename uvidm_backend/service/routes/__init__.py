"""The API's routes, one module per resource; `create_app` includes each module's `router`."""
