//! Where the ARM token comes from: a credential chain for CI and for people, built on
//! azure_identity (default features off, sending through our reqwest client), plus a cache.
//!
//! Chosen from the environment ([`CredentialSource::from_lookup`]), first match wins:
//!
//! 1. `KOMBIFORM_AZURE_CREDENTIAL` = `client-secret` | `workload-identity` |
//!    `managed-identity` | `azure-cli` forces one source (a VM with managed identity, say,
//!    which has no environment variable to recognise it by);
//! 2. `AZURE_CLIENT_SECRET` (with `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`): a service principal
//!    with a client secret;
//! 3. `AZURE_FEDERATED_TOKEN_FILE` (with `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`): workload
//!    identity federation (the token file a CI system or Kubernetes provides);
//! 4. `IDENTITY_ENDPOINT` or `MSI_ENDPOINT` (App Service, Container Apps, Functions): managed
//!    identity (user-assigned when `AZURE_CLIENT_ID` is set), then the Azure CLI;
//! 5. otherwise the Azure CLI (`az login`), for people.
//!
//! Sources configured by environment variables are used alone: a wrong secret is an error,
//! never a silent fall-back to someone's CLI login. Nothing here probes the instance metadata
//! endpoint unless asked to. Token values never reach a log or an error message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use crate::config::ArmConfig;
use crate::error::ArmError;
use crate::transport::IdentityTransport;

/// The scope of an ARM token (the audience stays ARM's when the endpoint is a stand-in).
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The scope of an Azure Storage token (Blob Storage, where a team's state is kept).
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// Forces one credential source: `client-secret`, `workload-identity`, `managed-identity` or
/// `azure-cli`.
pub const CREDENTIAL_ENV: &str = "KOMBIFORM_AZURE_CREDENTIAL";

/// A token is renewed when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// One way to get an ARM token.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A service principal and its client secret (OAuth2 client credentials).
    ClientSecret {
        /// The Entra tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The secret (its `Debug` is redacted).
        secret: Secret,
    },
    /// Workload identity federation: a federated token read from a file, exchanged for an
    /// ARM token.
    WorkloadIdentity {
        /// The Entra tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The file holding the federated token.
        token_file: PathBuf,
    },
    /// The managed identity of the Azure host (user-assigned when `client_id` is given).
    ManagedIdentity {
        /// The client id of a user-assigned identity.
        client_id: Option<String>,
    },
    /// The account logged in to the Azure CLI.
    AzureCli {
        /// The tenant to ask the CLI for, when not its default.
        tenant_id: Option<String>,
    },
}

impl CredentialSource {
    /// A short name for messages (`client secret`, `azure cli`…).
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client secret",
            Self::WorkloadIdentity { .. } => "workload identity",
            Self::ManagedIdentity { .. } => "managed identity",
            Self::AzureCli { .. } => "azure cli",
        }
    }

    /// The credential chain the environment asks for (see the module documentation), read
    /// through `lookup` (`std::env::var` in production; a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Self>, ArmError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let forced = var(CREDENTIAL_ENV);
        let chosen = match forced.as_deref() {
            Some("client-secret") => "client-secret",
            Some("workload-identity") => "workload-identity",
            Some("managed-identity") => "managed-identity",
            Some("azure-cli") => "azure-cli",
            Some(other) => {
                return Err(ArmError::Invalid(format!(
                    "{CREDENTIAL_ENV}={other:?} is not a credential source; use \
                     client-secret, workload-identity, managed-identity or azure-cli"
                )))
            }
            None if var("AZURE_CLIENT_SECRET").is_some() => "client-secret",
            None if var("AZURE_FEDERATED_TOKEN_FILE").is_some() => "workload-identity",
            None if var("IDENTITY_ENDPOINT").is_some() || var("MSI_ENDPOINT").is_some() => {
                "managed-identity, then azure-cli"
            }
            None => "azure-cli",
        };
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                ArmError::Invalid(format!(
                    "the {chosen} credential needs the environment variable {name}"
                ))
            })
        };
        let managed = || Self::ManagedIdentity {
            client_id: var("AZURE_CLIENT_ID"),
        };
        let cli = || Self::AzureCli {
            tenant_id: var("AZURE_TENANT_ID"),
        };
        Ok(match chosen {
            "client-secret" => vec![Self::ClientSecret {
                tenant_id: required("AZURE_TENANT_ID")?,
                client_id: required("AZURE_CLIENT_ID")?,
                secret: Secret::new(required("AZURE_CLIENT_SECRET")?),
            }],
            "workload-identity" => vec![Self::WorkloadIdentity {
                tenant_id: required("AZURE_TENANT_ID")?,
                client_id: required("AZURE_CLIENT_ID")?,
                token_file: PathBuf::from(required("AZURE_FEDERATED_TOKEN_FILE")?),
            }],
            "managed-identity" => vec![managed()],
            "managed-identity, then azure-cli" => vec![managed(), cli()],
            _ => vec![cli()],
        })
    }

    /// The azure_identity credential for this source, sending through `transport` and asking
    /// for tokens at `authority_host` (None: `https://login.microsoftonline.com`).
    fn build(
        &self,
        transport: &Arc<IdentityTransport>,
        authority_host: Option<&str>,
    ) -> Result<Arc<dyn TokenCredential>, ArmError> {
        let client_options = || {
            let mut options = ClientOptions {
                transport: Some(Transport::new(transport.clone())),
                ..ClientOptions::default()
            };
            if let Some(host) = authority_host {
                let mut custom = azure_core::cloud::CustomConfiguration::default();
                custom.authority_host = host.to_owned();
                options.cloud = Some(Arc::new(custom.into()));
            }
            options
        };
        let failed = |err: azure_core::Error| {
            ArmError::Credential(format!("setting up the {} credential: {err}", self.name()))
        };
        Ok(match self {
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                secret.clone(),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(),
                }),
            )
            .map_err(failed)?,
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map_err(failed)?,
            Self::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: client_options(),
                }))
                .map_err(failed)?
            }
            Self::AzureCli { tenant_id } => {
                AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..AzureCliCredentialOptions::default()
                }))
                .map_err(failed)?
            }
        })
    }
}

/// The chain, built, with the current token cached until shortly before it expires.
#[derive(Debug)]
pub(crate) struct Tokens {
    chain: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    cache: tokio::sync::Mutex<Option<AccessToken>>,
    scope: &'static str,
}

impl Tokens {
    /// The chain for ARM tokens ([`ARM_SCOPE`]).
    pub(crate) fn new(
        sources: &[CredentialSource],
        transport: Arc<IdentityTransport>,
        authority_host: Option<&str>,
    ) -> Result<Self, ArmError> {
        Self::for_scope(sources, transport, authority_host, ARM_SCOPE)
    }

    /// The chain for tokens of `scope`.
    pub(crate) fn for_scope(
        sources: &[CredentialSource],
        transport: Arc<IdentityTransport>,
        authority_host: Option<&str>,
        scope: &'static str,
    ) -> Result<Self, ArmError> {
        if sources.is_empty() {
            return Err(ArmError::Invalid("the credential chain is empty".into()));
        }
        let chain = sources
            .iter()
            .map(|source| Ok((source.name(), source.build(&transport, authority_host)?)))
            .collect::<Result<_, ArmError>>()?;
        Ok(Self {
            chain,
            cache: tokio::sync::Mutex::new(None),
            scope,
        })
    }

    /// Forgets the cached token (ARM refused it).
    pub(crate) async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// A valid token of the chain's scope: the cached one, or a new one from the first source of the chain
    /// that gives one. One request at a time asks the chain; the others wait for its answer.
    pub(crate) async fn bearer(&self) -> Result<Secret, ArmError> {
        let mut cached = self.cache.lock().await;
        if let Some(token) = cached.as_ref() {
            let left = token.expires_on - azure_core::time::OffsetDateTime::now_utc();
            if left > RENEW_BEFORE {
                return Ok(token.token.clone());
            }
        }
        let mut failures = Vec::new();
        for (name, credential) in &self.chain {
            match credential.get_token(&[self.scope], None).await {
                Ok(token) => {
                    let secret = token.token.clone();
                    *cached = Some(token);
                    return Ok(secret);
                }
                Err(err) => failures.push(format!("{name}: {err}")),
            }
        }
        Err(ArmError::Credential(failures.join("; ")))
    }
}

/// Bearer tokens of one scope from the credential chain, for Azure services other than ARM
/// (Blob Storage: [`STORAGE_SCOPE`]), cached until shortly before they expire. The same
/// chain, authority host and HTTP stack as [`crate::Arm`]; token values never reach a log.
#[derive(Debug)]
pub struct TokenSource {
    tokens: Tokens,
    runtime: tokio::runtime::Runtime,
}

impl TokenSource {
    /// A source of tokens for `scope`, from the chain and authority host the environment
    /// describes ([`ArmConfig::from_env`]).
    pub fn from_env(scope: &'static str) -> Result<Self, ArmError> {
        Self::new(&ArmConfig::from_env()?, scope, &[])
    }

    /// A source of tokens for `scope` from `config`'s chain and authority host. It runs its
    /// own small runtime: [`TokenSource::bearer`] is a blocking call.
    /// `extra_roots` (PEM) are trusted besides the platform's roots (a test token endpoint).
    pub fn new(
        config: &ArmConfig,
        scope: &'static str,
        extra_roots: &[String],
    ) -> Result<Self, ArmError> {
        crate::client::ensure_crypto_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kombiform-token")
            .enable_all()
            .build()
            .map_err(|err| ArmError::Invalid(format!("starting the token runtime: {err}")))?;
        let mut builder = reqwest::Client::builder();
        for pem in extra_roots {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|err| ArmError::Invalid(format!("an extra root certificate: {err}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kombiform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ArmError::Invalid(format!("building the HTTP client: {err}")))?;
        let transport = Arc::new(IdentityTransport::new(http, Arc::default()));
        let authority = config.authority_host.as_ref().map(reqwest::Url::as_str);
        let tokens = Tokens::for_scope(&config.credentials, transport, authority, scope)?;
        Ok(Self { tokens, runtime })
    }

    /// A valid token (blocking): the cached one, or a new one from the chain.
    pub fn bearer(&self) -> Result<Secret, ArmError> {
        self.runtime.block_on(self.tokens.bearer())
    }

    /// Forgets the cached token (the service refused it).
    pub fn invalidate(&self) {
        self.runtime.block_on(self.tokens.invalidate());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn chain(vars: &[(&str, &str)]) -> Result<Vec<CredentialSource>, ArmError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CredentialSource::from_lookup(&|name| map.get(name).cloned())
    }

    fn names(vars: &[(&str, &str)]) -> Vec<&'static str> {
        chain(vars).unwrap().iter().map(|s| s.name()).collect()
    }

    #[test]
    fn the_environment_picks_the_source() {
        let sp = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ];
        assert_eq!(names(&sp), ["client secret"]);
        let wif = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        assert_eq!(names(&wif), ["workload identity"]);
        assert_eq!(
            names(&[("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token")]),
            ["managed identity", "azure cli"]
        );
        assert_eq!(names(&[]), ["azure cli"]);
        assert_eq!(
            names(&[
                ("KOMBIFORM_AZURE_CREDENTIAL", "managed-identity"),
                ("AZURE_CLIENT_SECRET", "s")
            ]),
            ["managed identity"]
        );
    }

    #[test]
    fn a_configured_source_with_missing_variables_is_an_error_naming_them() {
        let err = chain(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_TENANT_ID", "t")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the client-secret credential needs the environment variable AZURE_CLIENT_ID"
        );
        let err = chain(&[("KOMBIFORM_AZURE_CREDENTIAL", "password")]).unwrap_err();
        assert!(
            err.to_string().contains("is not a credential source"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let sources = chain(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2-very-secret"),
        ])
        .unwrap();
        let debug = format!("{sources:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
