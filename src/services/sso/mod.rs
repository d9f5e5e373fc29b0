//! `kombify-sso`: exchanges a Zitadel access token for a PocketBase token, applies feature
//! flags, and receives Stripe and Zitadel webhooks.
