//! The prose of `--help`: what each command's help shows after its options (examples, the
//! environment variables it reads, its exit codes). Kept apart from the clap definition so
//! that `cli.rs` stays a map of the commands. Golden files pin the rendered help
//! (`tests/golden/cli/help/`).
//!
//! Not here: the options themselves (their doc comments in `cli.rs` are their help).

/// After the top-level help: exit codes, environment, where to start.
pub(crate) const TOP: &str = "\
Exit codes (every command):
  0        success: valid, built, no changes or differences
  1        error: invalid specs or arguments, an unknown environment, a failed or stale apply
  2        changes or differences found (plan, diff, build --check, migrate-specs --check)
  3        blocked: destructive changes without consent (plan, apply), or secrets only a
           person can set are missing (apply did what did not need them)
  130/143  apply stopped by SIGINT/SIGTERM

Environment:
  NO_COLOR   set and not empty: no colour with --color auto (the default)
  plan and apply read the secrets the environment's platform spec references: `{env: NAME}`
  reads NAME, `{keyVault: name}` reads KV_NAME (e.g. PGPASSWORD, POCKETBASE_SUPERUSER_PASSWORD
  for `local`); see `kombiform plan --help`

Examples:
  kombiform validate && kombiform build      check the specs, write generated/
  kombiform plan --env local                 what an apply would change (./scripts/local-up.sh first)
  kombiform completions bash > ~/.local/share/bash-completion/completions/kombiform";

/// `validate`.
pub(crate) const VALIDATE: &str = "\
Examples:
  kombiform validate                      every problem of specs/, with file:line:column
  kombiform validate --env prod           and fail unless the environment `prod` exists
  kombiform validate --format json | jq '.diagnostics[].code'

Environment: NO_COLOR.
Exit codes: 0 valid, 1 problems found (or an unknown --env).";

/// `build`.
pub(crate) const BUILD: &str = "\
Examples:
  kombiform build                         write generated/ from specs/
  kombiform build --check                 in CI: fail (exit 2) if generated/ is stale
  kombiform build --env local --out /tmp/gen

Environment: NO_COLOR.
Exit codes: 0 built (or up to date), 1 invalid specs, 2 out of date (--check).";

/// `graph`.
pub(crate) const GRAPH: &str = "\
Examples:
  kombiform graph --env local
  kombiform graph --env prod --format dot | dot -Tsvg > prod.svg

Environment: NO_COLOR.
Exit codes: 0 printed, 1 invalid specs, an unknown environment or a dependency cycle.";

/// `diff`.
pub(crate) const DIFF: &str = "\
Examples:
  kombiform diff                          what a build would change in generated/
  kombiform diff --env prod --format json

Environment: NO_COLOR.
Exit codes: 0 no differences, 1 invalid specs, 2 differences.";

/// `migrate-specs`.
pub(crate) const MIGRATE: &str = "\
Examples:
  kombiform migrate-specs --check         exit 2 if a file is written for an older apiVersion
  kombiform migrate-specs && git diff specs/

Environment: NO_COLOR.
Exit codes: 0 current (or upgraded), 1 a file cannot be upgraded, 2 upgrades needed (--check).";

/// `schema`.
pub(crate) const SCHEMA: &str = "\
Example:
  kombiform schema > specs/schema/kombiform.schema.json

Exit codes: 0.";

/// `plan`.
pub(crate) const PLAN: &str = "\
Examples:
  kombiform plan --env local                          what apply would change
  kombiform plan --env local --save local.plan.json   save it; then: kombiform apply local.plan.json
  kombiform plan --env local --verbose                every attribute, whole values
  kombiform plan --env prod --format markdown         a pull-request comment
  kombiform plan --env local --allow-destroy tenant:stark-lab
  kombiform plan --env prod --target azure            only Azure (and what it depends on)

Environment:
  the secrets the platform spec of the environment references, by the one rule: `{env: NAME}`
  reads NAME, `{keyVault: name}` reads KV_NAME (upper case, `-` as `_`). A variable set but
  empty is a value: `PGPASSWORD=` for a local PostgreSQL with trust authentication. For
  `local`: POCKETBASE_SUPERUSER_PASSWORD (kombify-local-dev with ./scripts/local-up.sh) and
  PGPASSWORD. Azure: AZURE_TENANT_ID and AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or
  AZURE_FEDERATED_TOKEN_FILE (else a managed identity, else the Azure CLI;
  KOMBIFORM_AZURE_CREDENTIAL forces one; the same credential reads and locks a state the
  spec keeps in Azure Blob, `state: {backend: azureBlob}`); KOMBIFORM_ARM_ENDPOINT and
  AZURE_AUTHORITY_HOST point at a stand-in, KOMBIFORM_BLOB_ENDPOINT at Azurite. NO_COLOR.

Exit codes: 0 no changes, 2 changes, 3 blocked (destructive changes without consent), 1 error.";

/// `apply`.
pub(crate) const APPLY: &str = "\
Examples:
  kombiform apply local.plan.json                     exactly the saved plan (refused if stale)
  kombiform apply local.plan.json --allow-destroy tenant:stark-lab
  kombiform apply --env local                         plan, show, ask `yes`, apply
  kombiform apply --env local --auto-approve --quiet  in CI
  kombiform apply --env local --format json           events for machines, one per line

Environment: the secrets of `kombiform plan` (see `kombiform plan --help`), NO_COLOR; USER
(or LOGNAME) names the actor in the audit record.

Exit codes: 0 applied, 1 failed, stale or cancelled, 3 blocked (destructive changes without
consent, or secrets only a person can set are missing: the rest was applied), 130/143
stopped by SIGINT/SIGTERM (a second signal exits at once).";

/// `state`.
pub(crate) const STATE: &str = "\
Examples:
  kombiform state list --env local
  kombiform state show postgres.tenant.acme --env local
  kombiform state check --env local && kombiform state repair --env local

Environment: NO_COLOR.
Exit codes: 0 done (check: sound), 1 error (check: damaged; an unknown environment).";

/// `completions`.
pub(crate) const COMPLETIONS: &str = "\
Examples:
  kombiform completions bash > ~/.local/share/bash-completion/completions/kombiform
  kombiform completions zsh > \"${fpath[1]}/_kombiform\"
  kombiform completions fish > ~/.config/fish/completions/kombiform.fish
  kombiform completions powershell >> $PROFILE

Exit codes: 0.";

/// `man`.
pub(crate) const MAN: &str = "\
Examples:
  kombiform man | man -l -                            read the main page
  kombiform man --out ~/.local/share/man/man1         kombiform.1 and one page per command

Exit codes: 0 written, 1 the directory cannot be written.";

/// `state list`.
pub(crate) const STATE_LIST: &str = "\
Examples:
  kombiform state list --env local
  kombiform state list --env local --format json | jq -r '.resources[].address'

Environment: NO_COLOR.
Exit codes: 0 listed, 1 an unknown environment or unreadable state.";

/// `state show`.
pub(crate) const STATE_SHOW: &str = "\
Examples:
  kombiform state show postgres.tenant.acme --env local
  kombiform state show pocketbase.collection.t_acme_nodes --env local --format json

Environment: NO_COLOR.
Exit codes: 0 shown, 1 not recorded, an unknown environment or unreadable state.";

/// `state check`.
pub(crate) const STATE_CHECK: &str = "\
Examples:
  kombiform state check --env local
  kombiform state check --env local --format json

Environment: NO_COLOR.
Exit codes: 0 sound, 1 damaged (or an unknown environment).";

/// `state repair`.
pub(crate) const STATE_REPAIR: &str = "\
Example:
  kombiform state repair --env local && kombiform plan --env local

Environment: NO_COLOR.
Exit codes: 0 repaired (or nothing to repair), 1 error.";

/// `state unlock`.
pub(crate) const STATE_UNLOCK: &str = "\
Example:
  kombiform state unlock 3f9c2a7d1e5b --env local     the id the lock error showed

Environment: NO_COLOR.
Exit codes: 0 unlocked, 1 no such lock (or an unknown environment).";
