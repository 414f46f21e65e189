//! Entry tokens: hex HMAC-SHA256(secret, "contest_id:entry_id").
//!
//! `hmac` + `sha2` (RustCrypto) compute the tag and `verify_slice` compares it
//! in constant time, so a client learns nothing from how long a refusal takes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The node's `WS_TOKEN_SECRET`.
#[derive(Clone)]
pub struct TokenSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

impl TokenSecret {
    pub fn new(secret: &str) -> TokenSecret {
        TokenSecret {
            key: secret.as_bytes().to_vec(),
        }
    }

    fn mac(&self, contest_id: &str, entry_id: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(contest_id.as_bytes());
        mac.update(b":");
        mac.update(entry_id.as_bytes());
        mac
    }

    /// The token that lets a client follow `entry_id` of `contest_id`.
    pub fn sign(&self, contest_id: &str, entry_id: &str) -> String {
        hex::encode(self.mac(contest_id, entry_id).finalize().into_bytes())
    }

    /// Whether `token` is the entry's token (constant-time comparison).
    pub fn verify(&self, contest_id: &str, entry_id: &str, token: &str) -> bool {
        match hex::decode(token) {
            Ok(tag) => self.mac(contest_id, entry_id).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_the_contract_definition() {
        // Computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"c1:e42",hashlib.sha256).hexdigest())'
        let secret = TokenSecret::new("s3cret");
        assert_eq!(
            secret.sign("c1", "e42"),
            "5643d589cf2290e1c599d605180e50820606bbdd8d4f9914da7d44e4b7b4bf05"
        );
        let token = secret.sign("c1", "e42");
        assert!(secret.verify("c1", "e42", &token));
        assert!(secret.verify("c1", "e42", &token.to_uppercase()));
        assert!(!secret.verify("c1", "e43", &token));
        assert!(!secret.verify("c2", "e42", &token));
        assert!(!secret.verify("c1", "e42", &token[..62]));
        assert!(!secret.verify("c1", "e42", "zz"));
        assert!(!TokenSecret::new("other").verify("c1", "e42", &token));
    }
}
