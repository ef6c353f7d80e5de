"""The bearer token as a route dependency: security.TokenCheck refuses first; this documents the scheme
in the schema and guards the routes should the app be mounted without the middleware."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from uvidm_backend.service.context import Service, service
from uvidm_backend.service.security import token_matches

BEARER = HTTPBearer(auto_error=False, description="the token the service was started with")


def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
               context: Annotated[Service, Depends(service)]) -> None:
    token = context.settings.token
    if token is not None and (credentials is None or not token_matches(
            f"Bearer {credentials.credentials}".encode(), token.encode())):
        raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})


GUARDED = [Depends(authorized)]
