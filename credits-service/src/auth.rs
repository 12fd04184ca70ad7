//! Bearer tokens: each bound to one tenant, plus one operator (admin) token.
//!
//! Tokens are never stored or compared as text. At start each token is replaced by its
//! SHA-256 digest; a request's token is hashed the same way and looked up by digest. The
//! admin digest is compared with [`subtle::ConstantTimeEq`]; tenant digests are keys of a
//! hash map, which leaks nothing useful through timing because an attacker cannot choose
//! digests (finding a token whose digest shares a prefix with a real one is a preimage
//! search). Tokens never reach a log: the `Authorization` header is marked sensitive and
//! no code path formats it.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use credits_core::TenantId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;

type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The operator.
    Admin,
    /// A tenant, by its token.
    Tenant(TenantId),
}

/// Resolves `Authorization: Bearer …` headers to callers.
#[derive(Debug)]
pub(crate) struct Authenticator {
    admin: Option<TokenDigest>,
    tenants: HashMap<TokenDigest, TenantId>,
}

impl Authenticator {
    pub(crate) fn new(config: &Config) -> Self {
        Authenticator {
            admin: config.admin_token.as_ref().map(|t| digest(t.expose())),
            tenants: config
                .tenant_tokens
                .iter()
                .map(|(tenant, token)| (digest(token.expose()), tenant.clone()))
                .collect(),
        }
    }

    /// The caller of a request.
    ///
    /// # Errors
    /// 401 `unauthenticated` without a well-formed bearer token, or with an unknown one.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let unauthenticated =
            |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", why.to_owned());
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthenticated("an Authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("the Authorization header must be Bearer <token>"))?;
        let d = digest(token);
        if let Some(admin) = &self.admin
            && bool::from(admin.ct_eq(&d))
        {
            return Ok(Caller::Admin);
        }
        match self.tenants.get(&d) {
            Some(tenant) => Ok(Caller::Tenant(tenant.clone())),
            None => Err(unauthenticated("unknown token")),
        }
    }

    /// The caller, who must be the operator.
    ///
    /// # Errors
    /// 401 as [`caller`](Self::caller); 403 `admin_required` for a tenant token.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.caller(headers)? {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_required",
                "this endpoint needs the operator token",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::Secret;

    fn auth() -> Authenticator {
        let mut c = Config {
            admin_token: Some(Secret::new("admin-0123456789abcdef")),
            ..Config::default()
        };
        c.tenant_tokens.insert(
            TenantId::new("acme").unwrap(),
            Secret::new("acme-0123456789abcdef"),
        );
        Authenticator::new(&c)
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn resolves_each_header_form() {
        let a = auth();
        let acme = Caller::Tenant(TenantId::new("acme").unwrap());
        let cases: &[(Option<&str>, Result<Caller, &str>)] = &[
            (Some("Bearer admin-0123456789abcdef"), Ok(Caller::Admin)),
            (Some("bearer acme-0123456789abcdef"), Ok(acme.clone())),
            (Some("Bearer  acme-0123456789abcdef "), Ok(acme)),
            (Some("Bearer acme-0123456789abcdeX"), Err("unauthenticated")),
            (Some("Basic YWRtaW46YWRtaW4="), Err("unauthenticated")),
            (Some("Bearer"), Err("unauthenticated")),
            (Some("Bearer "), Err("unauthenticated")),
            (None, Err("unauthenticated")),
        ];
        for (header, want) in cases {
            let h = header.map(with).unwrap_or_default();
            let got = a.caller(&h).map_err(|e| e.body.code);
            assert_eq!(got, want.clone(), "header {header:?}");
        }
        assert_eq!(
            a.admin(&with("Bearer acme-0123456789abcdef"))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        assert!(a.admin(&with("Bearer admin-0123456789abcdef")).is_ok());
    }

    #[test]
    fn without_an_admin_token_no_one_is_admin() {
        let a = Authenticator::new(&Config::default());
        assert_eq!(
            a.caller(&with("Bearer admin-0123456789abcdef"))
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
}
