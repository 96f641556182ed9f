//! API tokens, as the state machine keeps them: only a SHA-256 of each
//! secret is replicated, so neither a data directory nor a snapshot holds
//! a usable token. A revoked token keeps its row (with `revoked_at`), so
//! its id is never reused and the bootstrap token, once revoked, cannot be
//! created again.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApplyResult, LogIndex, Rejection, RejectionKind, Response, State};

/// Id of the token made from the server's bootstrap token file.
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap";

/// Id of the token made from the server's worker token file.
pub const WORKERS_TOKEN_ID: &str = "workers";

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Everything a person can do: cluster membership, tokens, snapshots,
    /// and what an operator can do.
    Admin,
    /// Jobs and runs: create, change, trigger, cancel; and read.
    Operator,
    /// Read only.
    Viewer,
    /// The worker protocol only.
    Worker,
}

impl TokenRole {
    /// Every role.
    pub const ALL: [TokenRole; 4] = [
        TokenRole::Admin,
        TokenRole::Operator,
        TokenRole::Viewer,
        TokenRole::Worker,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Operator => "operator",
            TokenRole::Viewer => "viewer",
            TokenRole::Worker => "worker",
        }
    }
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TokenRole::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; accepted: admin, operator, viewer, worker"))
    }
}

/// A token as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public id (for listing, revoking, and audit lines).
    pub id: String,
    /// What it is for, as its creator said.
    pub name: String,
    /// What it allows.
    pub role: TokenRole,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Raft index of the command that last changed it.
    pub revision: LogIndex,
}

impl Token {
    /// Whether it lets its holder in at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// Largest number of tokens (revoked ones included) a cluster keeps.
pub const MAX_TOKENS: usize = 10_000;

impl State {
    pub(super) fn create_token(&mut self, token: &Token, now: DateTime<Utc>, index: LogIndex) -> ApplyResult {
        if self.tokens.get(&token.id).is_some() {
            return Err(Rejection::already_exists(format!("token {:?}", token.id)));
        }
        if self.index.token_by_hash.contains_key(&token.hash) {
            // Two tokens with the same secret would be indistinguishable.
            return Err(Rejection::already_exists("a token with the same secret"));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(Rejection::new(
                RejectionKind::FailedPrecondition,
                format!("the cluster keeps at most {MAX_TOKENS} tokens (revoked ones included)"),
            ));
        }
        let token = Token {
            created_at: now,
            revoked_at: None,
            revision: index,
            ..token.clone()
        };
        self.index.insert_token(&token);
        self.tokens.insert(token.id.clone(), token.clone());
        Ok(Response::Token(token))
    }

    pub(super) fn revoke_token(&mut self, id: &str, now: DateTime<Utc>, index: LogIndex) -> ApplyResult {
        let Some(token) = self.tokens.get(id) else {
            return Err(Rejection::not_found(format!("token {id:?}")));
        };
        if token.revoked_at.is_some() {
            return Ok(Response::Token(token.clone()));
        }
        let token = Token {
            revoked_at: Some(now),
            revision: index,
            ..token.clone()
        };
        self.tokens.insert(id.to_owned(), token.clone());
        Ok(Response::Token(token))
    }

    /// The token whose secret hashes to `hash` (usable or not).
    pub fn token_by_hash(&self, hash: &str) -> Option<&Token> {
        self.index.token_by_hash.get(hash).and_then(|id| self.tokens.get(id))
    }

    /// The token with id `id`.
    pub fn token(&self, id: &str) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// Every token, in id order.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.iter().map(|(_, token)| token)
    }
}
