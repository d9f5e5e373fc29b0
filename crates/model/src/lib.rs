//! The validated, typed model of the kombify platform: what the specs say, after validation.
//!
//! Built by `kombiform_spec` from documents that passed schema validation; semantic checks
//! run there. Everything downstream (emitters, the engine, the services' configuration)
//! reads this crate's types.
//!
//! - [`types`]: platforms, plans, tenants, flags, collection templates; secrets only as
//!   [`SecretRef`]s.
//! - [`naming`]: every derived name (slugs, Azure resource names, collection names).
//! - [`secret`]: the one rule from a secret reference to its variable, and its resolver.
//! - [`services`]: the configuration types of `kombify-sso` and `kombify-health`.
//!
//! Pure: no IO, no clock, no randomness, no secret values.
//! Not here: parsing or validating specs (`kombiform_spec`), or anything generated from the
//! model (`kombiform_emit`).

pub mod naming;
pub mod secret;
pub mod services;
pub mod types;

pub use types::*;

/// Lowercase hex of `bytes`: the one hex encoding of the workspace (hashes, ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
