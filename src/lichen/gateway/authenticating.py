"""Who is calling: API keys (hashed, scoped, expiring) and optional JWT (HS256, or RS256 with a JWKS file)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lichen.errors import ConfigError
from lichen.gateway.keys import TOKEN_PREFIX, KeyCache
from lichen.spec.models import AuthSpec

_JWT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    """``status`` 0 means allowed; else 401 or 403 with a deny ``reason`` safe to log and count."""

    status: int
    reason: str
    principal: str | None = None


ALLOWED_ANONYMOUS = Verdict(0, "ok", None)


def credential_of(authorization: str | None, api_key_header: str | None) -> str | None:
    if api_key_header:
        return api_key_header.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class JwtVerifier:
    """PyJWT is imported here, when the spec asks for JWTs: a gateway without them starts faster (a restarted
    gateway's start is what requests wait for)."""

    def __init__(self, algorithm: str, key: Any, keys_by_kid: dict[str, Any], issuer: str | None, audience: str | None):
        import jwt

        self._jwt = jwt
        self.algorithm = algorithm
        self.key = key
        self.keys_by_kid = keys_by_kid
        self.issuer = issuer
        self.audience = audience
        self._cache: dict[str, tuple[float | None, str]] = {}

    @classmethod
    def from_spec(cls, spec: Any, base_dir: Path) -> JwtVerifier:
        import jwt

        keys_by_kid: dict[str, Any] = {}
        key: Any = None
        if spec.algorithm == "HS256":
            key = os.environ.get(spec.secret_env or "")
            if not key:
                raise ConfigError(f"environment variable {spec.secret_env} (the JWT secret) is not set", where="settings.auth.jwt.secret_env")
        else:
            path = Path(spec.jwks_file)
            path = path if path.is_absolute() else base_dir / path
            try:
                jwks = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigError(f"cannot load JWKS: {exc}", where=str(path)) from None
            for item in jwks.keys:
                keys_by_kid[item.key_id or ""] = item.key
            if len(jwks.keys) == 1:
                key = jwks.keys[0].key
        return cls(spec.algorithm, key, keys_by_kid, spec.issuer, spec.audience)

    def verify(self, token: str, now_wall: float) -> tuple[str | None, str]:
        cached = self._cache.get(token)
        if cached is not None:
            exp, subject = cached
            if exp is None or now_wall < exp:
                return subject, "ok"
            return None, "expired_jwt"
        jwt = self._jwt
        try:
            key = self.key
            if self.keys_by_kid:
                kid = jwt.get_unverified_header(token).get("kid")
                key = self.keys_by_kid.get(kid or "", key)
            if key is None:
                return None, "invalid_jwt"
            claims = jwt.decode(
                token, key, algorithms=[self.algorithm], issuer=self.issuer, audience=self.audience,
                options={"verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return None, "expired_jwt"
        except jwt.PyJWTError:
            return None, "invalid_jwt"
        subject = str(claims.get("sub", "anonymous"))
        if len(self._cache) >= _JWT_CACHE_SIZE:
            self._cache.clear()
        exp = claims.get("exp")
        self._cache[token] = (float(exp) if exp is not None else None, subject)
        return subject, "ok"


class Authenticator:
    def __init__(self, spec: AuthSpec, keys: KeyCache, base_dir: Path) -> None:
        self.spec = spec
        self.keys = keys
        self.enabled = spec.api_keys or spec.jwt is not None
        self.jwt = JwtVerifier.from_spec(spec.jwt, base_dir) if spec.jwt is not None else None

    def check(self, credential: str | None, path: str, now_wall: float) -> Verdict:
        if not self.enabled:
            return ALLOWED_ANONYMOUS
        if not credential:
            return Verdict(401, "missing_credentials")
        if credential.startswith(TOKEN_PREFIX) and self.spec.api_keys:
            key, reason = self.keys.verify(credential, path, now_wall)
            if key is None:
                return Verdict(403 if reason == "out_of_scope" else 401, reason)
            return Verdict(0, "ok", f"key:{key.id}")
        if self.jwt is not None:
            subject, reason = self.jwt.verify(credential, now_wall)
            if subject is None:
                return Verdict(401, reason)
            return Verdict(0, "ok", f"jwt:{subject}")
        return Verdict(401, "invalid_key")
