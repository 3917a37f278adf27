"""The interactive walkthrough: a FastAPI app (``create_app``) over payload builders and a static front-end."""
