//! The resources the stand-in holds and what ARM does with them: PUT, GET, PATCH, DELETE,
//! lists with paging, long-running operations and their polling URLs, resource-group
//! cascade delete, Key Vault soft delete, and the rewriting ARM applies to answers (location
//! display names, id case, added read-only properties, write-only properties left out).
//!
//! Time moves lazily: every request first settles the operations whose end has come.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::answer::{guid, now, stable_guid, Answer, Req};
use crate::faults::Outcome;
use crate::json::{merge_patch, remove_paths};
use crate::path::{CollectionPath, ResourcePath};
use crate::profiles::{
    self, display_location, normal_location, DeleteStyle, IdCase, OpUrls, Profile, PutStyle,
};

/// How long a new managed identity stays unknown to role assignments (directory
/// replication), in the stand-in's seconds.
const IDENTITY_REPLICATION_SECS: u64 = 10;

/// The tenant the stand-in's identities live in.
pub(crate) const TENANT: &str = "72f988bf-0000-4000-8000-00000000c0de";

#[derive(Debug)]
struct Resource {
    key: String,
    path: String,
    type_: String,
    type_key: String,
    name: String,
    parent_key: Option<String>,
    body: Value,
    state: String,
    visible: bool,
    busy: Option<String>,
    created: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Put { hidden: bool },
    Delete,
    Purge,
}

#[derive(Debug)]
struct Operation {
    id: String,
    target: String,
    kind: OpKind,
    status_path: Option<String>,
    result_status: u16,
    result_body: bool,
    done_at: Instant,
    outcome: Outcome,
    applied: bool,
    retry_after: u64,
    started: String,
    ended: Option<String>,
    none_error_while_running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Status,
    Result,
}

#[derive(Debug)]
struct DeletedVault {
    id: String,
    name: String,
    location: String,
    deleted: String,
}

/// The stand-in's world.
#[derive(Debug)]
pub(crate) struct Store {
    scale: f64,
    page_size: usize,
    resources: BTreeMap<String, Resource>,
    ops: HashMap<String, Operation>,
    op_paths: HashMap<String, (String, Which)>,
    pending: Vec<String>,
    deleted_vaults: BTreeMap<String, DeletedVault>,
}

/// What a new long-running operation needs to know.
struct NewOp<'a> {
    profile: &'a Profile,
    kind: OpKind,
    target: &'a str,
    sub: &'a str,
    group: &'a str,
    namespace: &'a str,
    location: &'a str,
    api: &'a str,
    secs: u64,
    outcome: Outcome,
    status: bool,
    result: bool,
    result_status: u16,
    result_body: bool,
}

impl Store {
    pub(crate) fn new(scale: f64, page_size: usize) -> Self {
        Self {
            scale,
            page_size: page_size.max(1),
            resources: BTreeMap::new(),
            ops: HashMap::new(),
            op_paths: HashMap::new(),
            pending: Vec::new(),
            deleted_vaults: BTreeMap::new(),
        }
    }

    fn scaled(&self, secs: u64) -> Duration {
        Duration::from_secs(secs).mul_f64(self.scale)
    }

    /// `Retry-After` for a delay of `secs` stand-in seconds: as ARM sends it at real time,
    /// and with `retry-after-ms` (the scaled real delay) when time is scaled.
    pub(crate) fn retry_after(&self, answer: Answer, secs: u64) -> Answer {
        if (self.scale - 1.0).abs() < f64::EPSILON {
            return answer.with("retry-after", &secs.to_string());
        }
        let real = self.scaled(secs);
        answer
            .with("retry-after", &real.as_secs_f64().ceil().to_string())
            .with("retry-after-ms", &real.as_millis().to_string())
    }

    // ----- time --------------------------------------------------------------------------

    /// Applies every operation whose end has come.
    pub(crate) fn settle(&mut self, now: Instant) {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|id| self.ops.get(*id).is_some_and(|op| op.done_at <= now))
            .cloned()
            .collect();
        self.pending.retain(|id| !due.contains(id));
        for id in due {
            self.apply(&id);
        }
    }

    fn apply(&mut self, id: &str) {
        let Some(op) = self.ops.get_mut(id) else {
            return;
        };
        op.applied = true;
        op.ended = Some(now());
        let (kind, outcome, target) = (op.kind, op.outcome, op.target.clone());
        match (kind, outcome) {
            (OpKind::Put { .. }, Outcome::Succeeded) => {
                if let Some(r) = self.resources.get_mut(&target) {
                    r.state = "Succeeded".into();
                    r.visible = true;
                    r.busy = None;
                }
            }
            (OpKind::Put { hidden: true }, _) => {
                self.resources.remove(&target);
            }
            (OpKind::Put { hidden: false }, ended) => {
                if let Some(r) = self.resources.get_mut(&target) {
                    r.state = terminal_name(ended).into();
                    r.visible = true;
                    r.busy = None;
                }
            }
            (OpKind::Delete, Outcome::Succeeded) => self.remove_tree(&target),
            (OpKind::Delete, _) => {
                if let Some(r) = self.resources.get_mut(&target) {
                    r.state = "Succeeded".into();
                    r.busy = None;
                }
            }
            (OpKind::Purge, Outcome::Succeeded) => {
                self.deleted_vaults.remove(&target);
            }
            (OpKind::Purge, _) => {}
        }
    }

    /// Removes a resource and everything under it; vaults among them become soft-deleted.
    fn remove_tree(&mut self, key: &str) {
        let prefix = format!("{key}/");
        let doomed: Vec<String> = self
            .resources
            .range(key.to_owned()..)
            .take_while(|(k, _)| k.as_str() == key || k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(r) = self.resources.remove(&k) {
                if r.type_key == "microsoft.keyvault/vaults" && r.visible {
                    self.deleted_vaults.insert(
                        r.name.to_ascii_lowercase(),
                        DeletedVault {
                            id: r.path.clone(),
                            name: r.name.clone(),
                            location: str_at(&r.body, "location").unwrap_or_default(),
                            deleted: now(),
                        },
                    );
                }
            }
        }
    }

    // ----- operations ----------------------------------------------------------------------

    fn start_op(&mut self, base: &str, new: NewOp<'_>) -> (String, Option<String>, Option<String>) {
        let id = guid();
        let api_query = format!("api-version={}", new.api);
        let query = |extra: &str| {
            if extra.is_empty() {
                api_query.clone()
            } else {
                format!("{extra}&{api_query}")
            }
        };
        let location = normal_location(new.location);
        let location = if location.is_empty() {
            "global".to_owned()
        } else {
            location
        };
        let (status_path, result_path) = match new.profile.urls {
            OpUrls::Subscription => (
                None,
                Some((
                    format!("/subscriptions/{}/operationresults/{id}", new.sub),
                    query(""),
                )),
            ),
            OpUrls::Regional {
                status,
                status_query,
                result,
                result_query,
            } => {
                let stem = format!(
                    "/subscriptions/{}/providers/{}/locations/{location}",
                    new.sub, new.namespace
                );
                (
                    Some((format!("{stem}/{status}/{id}"), query(status_query))),
                    Some((format!("{stem}/{result}/{id}"), query(result_query))),
                )
            }
            OpUrls::Group => {
                let path = format!(
                    "/subscriptions/{}/resourcegroups/{}/providers/{}/operationresults/{id}",
                    new.sub, new.group, new.namespace
                );
                (Some((path.clone(), query(""))), Some((path, query(""))))
            }
        };
        let status_path = status_path.filter(|_| new.status);
        let result_path = result_path.filter(|_| new.result);
        // With the same path for both (CDN), the status answer wins.
        if let Some((path, _)) = &result_path {
            self.op_paths
                .insert(path.to_ascii_lowercase(), (id.clone(), Which::Result));
        }
        if let Some((path, _)) = &status_path {
            self.op_paths
                .insert(path.to_ascii_lowercase(), (id.clone(), Which::Status));
        }
        let url =
            |p: &Option<(String, String)>| p.as_ref().map(|(path, q)| format!("{base}{path}?{q}"));
        let (status_url, result_url) = (url(&status_path), url(&result_path));
        let op = Operation {
            id: id.clone(),
            target: new.target.to_owned(),
            kind: new.kind,
            status_path: status_path.map(|(p, _)| p),
            result_status: new.result_status,
            result_body: new.result_body,
            done_at: Instant::now() + self.scaled(new.secs),
            outcome: new.outcome,
            applied: false,
            retry_after: new.profile.retry_after,
            started: now(),
            ended: None,
            none_error_while_running: new.profile.urls == OpUrls::Group,
        };
        self.ops.insert(id.clone(), op);
        self.pending.push(id.clone());
        (id, status_url, result_url)
    }

    /// The answer to a GET of an operation URL, if `path` is one.
    pub(crate) fn operation(&self, req: &Req) -> Option<Answer> {
        let (id, which) = self.op_paths.get(&req.path.to_ascii_lowercase())?;
        let op = self.ops.get(id)?;
        Some(match which {
            Which::Status => self.status_answer(op),
            Which::Result => self.result_answer(op, req),
        })
    }

    fn status_answer(&self, op: &Operation) -> Answer {
        let mut body = json!({
            "id": op.status_path.clone().unwrap_or_default(),
            "name": op.id,
            "startTime": op.started,
        });
        if !op.applied {
            body["status"] = json!("InProgress");
            if op.none_error_while_running {
                body["error"] = json!({"code": "None", "message": null});
            }
        } else {
            body["status"] = json!(terminal_name(op.outcome));
            body["endTime"] = json!(op.ended);
            if op.outcome != Outcome::Succeeded {
                body["error"] = op_error(op.outcome);
            }
        }
        Answer::json(200, &body)
    }

    fn result_answer(&self, op: &Operation, req: &Req) -> Answer {
        if !op.applied {
            let here = format!("{}{}?{}", req.base, req.path, query_string(req));
            let answer = Answer::empty(202).with("location", &here);
            return self.retry_after(answer, op.retry_after);
        }
        match op.outcome {
            Outcome::Succeeded if op.result_body => match self.resources.get(&op.target) {
                Some(r) => Answer::json(op.result_status, &self.render(r)),
                None => Answer::empty(op.result_status),
            },
            Outcome::Succeeded => Answer::empty(op.result_status),
            ended => {
                let error = op_error(ended);
                Answer::json(400, &json!({ "error": error }))
            }
        }
    }

    // ----- reads ---------------------------------------------------------------------------

    fn visible(&self, key: &str) -> Option<&Resource> {
        self.resources.get(key).filter(|r| r.visible)
    }

    /// 404 when the resource group or the parent of `rp` is missing.
    fn check_parents(&self, rp: &ResourcePath) -> Result<(), Answer> {
        if rp.is_group() {
            return Ok(());
        }
        if self.visible(&rp.group_key).is_none() {
            return Err(group_not_found(&rp.group));
        }
        if let Some(parent) = rp.parent_key.as_deref() {
            if parent != rp.group_key && self.visible(parent).is_none() {
                let name = parent.rsplit('/').next().unwrap_or(parent);
                return Err(Answer::error(
                    404,
                    "ParentResourceNotFound",
                    &format!(
                        "Can not perform requested operation on nested resource. Parent resource '{name}' not found."
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, rp: &ResourcePath) -> Answer {
        if let Err(answer) = self.check_parents(rp) {
            return answer;
        }
        match self.visible(&rp.key) {
            Some(r) => Answer::json(200, &self.render(r)),
            None if rp.is_group() => group_not_found(&rp.name),
            None => Answer::error(
                404,
                "ResourceNotFound",
                &format!(
                    "The Resource '{}/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                    rp.type_, rp.name, rp.group
                ),
            ),
        }
    }

    pub(crate) fn head_group(&self, rp: &ResourcePath) -> Answer {
        match self.visible(&rp.key) {
            Some(_) => Answer::empty(204),
            None => Answer::empty(404),
        }
    }

    /// One page of `items`, with a `nextLink` when more follow.
    fn page(&self, items: Vec<Value>, req: &Req) -> Answer {
        let skip: usize = req
            .query("$skiptoken")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let total = items.len();
        let value: Vec<Value> = items.into_iter().skip(skip).take(self.page_size).collect();
        let mut body = json!({ "value": value });
        if skip + self.page_size < total {
            let api = req.api_version().unwrap_or_default();
            body["nextLink"] = json!(format!(
                "{}{}?api-version={api}&$skiptoken={}",
                req.base,
                req.path,
                skip + self.page_size
            ));
        }
        Answer::json(200, &body)
    }

    pub(crate) fn list_collection(&self, c: &CollectionPath, req: &Req) -> Answer {
        if self.visible(&c.group_key).is_none() {
            let group = c.group_key.rsplit('/').next().unwrap_or_default();
            return group_not_found(group);
        }
        if c.parent_key != c.group_key && self.visible(&c.parent_key).is_none() {
            return Answer::error(404, "ParentResourceNotFound", "Parent resource not found.");
        }
        let prefix = format!("{}/", c.key);
        let items = self
            .resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, r)| r.visible && !k[prefix.len()..].contains('/'))
            .map(|(_, r)| self.render(r))
            .collect();
        self.page(items, req)
    }

    pub(crate) fn list_groups(&self, sub: &str, req: &Req) -> Answer {
        let items = self
            .resources
            .values()
            .filter(|r| {
                r.parent_key.is_none() && r.visible && sub_of(&r.key) == sub.to_ascii_lowercase()
            })
            .map(|r| self.render(r))
            .collect();
        self.page(items, req)
    }

    pub(crate) fn list_of_type(&self, sub: &str, type_key: &str, req: &Req) -> Answer {
        let sub = sub.to_ascii_lowercase();
        let items = self
            .resources
            .values()
            .filter(|r| r.visible && r.type_key == type_key && sub_of(&r.key) == sub)
            .map(|r| self.render(r))
            .collect();
        self.page(items, req)
    }

    /// `GET …/resourceGroups/{rg}/resources`: the group's top-level resources, in ARM's
    /// generic shape (no properties).
    pub(crate) fn list_group_resources(&self, group_key: &str, req: &Req) -> Answer {
        if self.visible(group_key).is_none() {
            let group = group_key.rsplit('/').next().unwrap_or_default();
            return group_not_found(group);
        }
        let items = self
            .resources
            .values()
            .filter(|r| r.visible && r.parent_key.as_deref() == Some(group_key))
            .map(|r| {
                let full = self.render(r);
                let mut generic = Map::new();
                for key in [
                    "id",
                    "name",
                    "type",
                    "location",
                    "tags",
                    "kind",
                    "sku",
                    "managedBy",
                    "identity",
                ] {
                    if let Some(v) = full.get(key) {
                        generic.insert(key.into(), v.clone());
                    }
                }
                Value::Object(generic)
            })
            .collect();
        self.page(items, req)
    }

    // ----- writes --------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put(
        &mut self,
        rp: &ResourcePath,
        body: Option<Value>,
        api: &str,
        base: &str,
        outcome: Outcome,
    ) -> Answer {
        let profile = profiles::profile(&rp.type_key());
        let body = match body {
            Some(body @ Value::Object(_)) => body,
            _ => {
                return Answer::error(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid: a JSON object is required.",
                )
            }
        };
        if let Err(answer) = self.check_parents(rp) {
            return answer;
        }
        if !rp.is_group() {
            if let Some(group) = self.visible(&rp.group_key) {
                if group.state == "Deleting" {
                    return Answer::error(
                        409,
                        "ResourceGroupBeingDeleted",
                        &format!("The resource group '{}' is in deprovisioning state and cannot perform this operation.", rp.group),
                    );
                }
            }
        }
        let top_level = rp.is_group() || rp.parent_key.as_deref() == Some(rp.group_key.as_str());
        let location = str_at(&body, "location").unwrap_or_default();
        if profile.tracked && top_level && location.trim().is_empty() {
            return Answer::error_with_target(
                400,
                "LocationRequired",
                "The location property is required for this definition.",
                "location",
            );
        }
        let existing = self.resources.get(&rp.key);
        if let Some(e) = existing {
            if e.busy.is_some() {
                return another_operation(rp);
            }
            let before = str_at(&e.body, "location").unwrap_or_default();
            if profile.tracked
                && top_level
                && normal_location(&before) != normal_location(&location)
            {
                return Answer::error(
                    400,
                    "InvalidResourceLocation",
                    &format!(
                        "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{}'. Please select a new resource name.",
                        rp.name, normal_location(&before), rp.group, normal_location(&location)
                    ),
                );
            }
        }
        if let Err(answer) = self.check_server_busy(rp) {
            return answer;
        }
        if let Err(answer) = self.check_quirks(rp, &body) {
            return answer;
        }
        let created = existing.is_none();
        let restored = rp.type_key() == "microsoft.keyvault/vaults"
            && self
                .deleted_vaults
                .remove(&rp.name.to_ascii_lowercase())
                .is_some();
        let style = match profile.put {
            PutStyle::LocationCreate if !created => PutStyle::Sync,
            style => style,
        };
        let running = match style {
            PutStyle::Provisioning if !created => "Updating",
            _ => profile.running_state,
        };
        let sync = matches!(style, PutStyle::Sync | PutStyle::Sync200);
        let resource = Resource {
            key: rp.key.clone(),
            path: rp.path.clone(),
            type_: rp.type_.clone(),
            type_key: rp.type_key(),
            name: rp.name.clone(),
            parent_key: rp.parent_key.clone(),
            body,
            state: if sync {
                "Succeeded".into()
            } else {
                running.into()
            },
            visible: style != PutStyle::LocationCreate,
            busy: None,
            created: existing.map(|e| e.created).unwrap_or_else(Instant::now),
        };
        self.resources.insert(rp.key.clone(), resource);
        let created_status = if created && !restored { 201 } else { 200 };
        if sync {
            let status = if style == PutStyle::Sync200 {
                200
            } else {
                created_status
            };
            return self.render_answer(&rp.key, status);
        }
        let root_location = self.root_location(rp);
        let new = NewOp {
            profile: &profile,
            kind: OpKind::Put {
                hidden: style == PutStyle::LocationCreate,
            },
            target: &rp.key,
            sub: &rp.sub,
            group: &rp.group,
            namespace: rp.namespace(),
            location: &root_location,
            api,
            secs: profile.put_secs,
            outcome,
            status: matches!(style, PutStyle::AsyncOperation | PutStyle::Both),
            result: matches!(style, PutStyle::LocationCreate | PutStyle::Both),
            result_status: 200,
            result_body: true,
        };
        let (op_id, status_url, result_url) = self.start_op(base, new);
        if let Some(r) = self.resources.get_mut(&rp.key) {
            r.busy = Some(op_id);
        }
        let mut answer = match style {
            PutStyle::LocationCreate => Answer::empty(202),
            PutStyle::Both => Answer::json(
                202,
                &json!({"operation": format!("Upsert{}ManagementOperation", last_type(&rp.type_)), "startTime": now()}),
            ),
            _ => self.render_answer(&rp.key, created_status),
        };
        if let Some(url) = status_url {
            answer = answer.with("azure-asyncoperation", &url);
        }
        if let Some(url) = result_url {
            answer = answer.with("location", &url);
        }
        if style == PutStyle::Provisioning {
            return answer;
        }
        self.retry_after(answer, profile.retry_after)
    }

    pub(crate) fn patch(&mut self, rp: &ResourcePath, body: Option<Value>) -> Answer {
        if let Err(answer) = self.check_parents(rp) {
            return answer;
        }
        let Some(patch) = body.filter(Value::is_object) else {
            return Answer::error(
                400,
                "InvalidRequestContent",
                "The request content was invalid: a JSON object is required.",
            );
        };
        let Some(resource) = self.resources.get_mut(&rp.key).filter(|r| r.visible) else {
            return self.get(rp);
        };
        if resource.busy.is_some() {
            return another_operation(rp);
        }
        let mut patch = patch;
        // ARM replaces tags as a whole.
        if let (Some(tags), Value::Object(body)) = (
            patch.as_object_mut().and_then(|p| p.remove("tags")),
            &mut resource.body,
        ) {
            body.insert("tags".into(), tags);
        }
        merge_patch(&mut resource.body, &patch);
        resource.path = rp.path.clone();
        resource.name = rp.name.clone();
        self.render_answer(&rp.key, 200)
    }

    pub(crate) fn delete(
        &mut self,
        rp: &ResourcePath,
        api: &str,
        base: &str,
        outcome: Outcome,
    ) -> Answer {
        if rp.is_group() {
            if self.visible(&rp.key).is_none() {
                return group_not_found(&rp.name);
            }
        } else if self.visible(&rp.group_key).is_none() {
            return group_not_found(&rp.group);
        }
        let Some(existing) = self.visible(&rp.key) else {
            return Answer::empty(204);
        };
        if existing.busy.is_some() {
            return another_operation(rp);
        }
        if let Err(answer) = self.check_server_busy(rp) {
            return answer;
        }
        let profile = profiles::profile(&rp.type_key());
        let (status, result, result_status) = match profile.delete {
            DeleteStyle::Sync => {
                self.remove_tree(&rp.key);
                return Answer::empty(200);
            }
            DeleteStyle::Location { final_status } => (false, true, final_status),
            DeleteStyle::AsyncOperation => (true, true, 200),
        };
        let root_location = self.root_location(rp);
        let new = NewOp {
            profile: &profile,
            kind: OpKind::Delete,
            target: &rp.key,
            sub: &rp.sub,
            group: &rp.group,
            namespace: rp.namespace(),
            location: &root_location,
            api,
            secs: profile.delete_secs,
            outcome,
            status,
            result,
            result_status,
            result_body: false,
        };
        let (op_id, status_url, result_url) = self.start_op(base, new);
        if let Some(r) = self.resources.get_mut(&rp.key) {
            r.busy = Some(op_id);
            r.state = "Deleting".into();
        }
        let mut answer = Answer::empty(202);
        if let Some(url) = status_url {
            answer = answer.with("azure-asyncoperation", &url);
        }
        if let Some(url) = result_url {
            answer = answer.with("location", &url);
        }
        self.retry_after(answer, profile.retry_after)
    }

    /// `POST {resource}/{action}`: `listKeys` answers keys, a workspace's `sharedKeys` its
    /// shared keys; other actions answer `{}`.
    pub(crate) fn action(&self, c: &CollectionPath) -> Answer {
        let Some(target) = self.visible(&c.parent_key) else {
            return Answer::error(
                404,
                "ResourceNotFound",
                "The resource the action is for was not found.",
            );
        };
        let action = c
            .type_
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if action == "listkeys" {
            let key = |n: &str| stable_guid(&format!("{}#{n}", target.key)).replace('-', "");
            return Answer::json(
                200,
                &json!({
                    "keys": [
                        {"keyName": "key1", "value": key("key1"), "permissions": "FULL"},
                        {"keyName": "key2", "value": key("key2"), "permissions": "FULL"},
                    ],
                    "primaryKey": key("key1"),
                    "secondaryKey": key("key2"),
                }),
            );
        }
        if action == "sharedkeys" && target.type_key == "microsoft.operationalinsights/workspaces" {
            let key = |n: &str| stable_guid(&format!("{}#{n}", target.key)).replace('-', "");
            return Answer::json(
                200,
                &json!({"primarySharedKey": key("primary"), "secondarySharedKey": key("secondary")}),
            );
        }
        Answer::json(200, &json!({}))
    }

    // ----- Key Vault soft delete -------------------------------------------------------------

    pub(crate) fn deleted_vaults(&self, sub: &str, req: &Req) -> Answer {
        let items = self
            .deleted_vaults
            .values()
            .filter(|v| sub_of(&v.id.to_ascii_lowercase()) == sub.to_ascii_lowercase())
            .map(|v| deleted_vault_body(sub, v))
            .collect();
        self.page(items, req)
    }

    pub(crate) fn deleted_vault(&self, sub: &str, name: &str) -> Answer {
        match self.deleted_vaults.get(&name.to_ascii_lowercase()) {
            Some(v) => Answer::json(200, &deleted_vault_body(sub, v)),
            None => Answer::error(
                404,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.KeyVault/deletedVaults/{name}' was not found."),
            ),
        }
    }

    pub(crate) fn purge_vault(&mut self, sub: &str, name: &str, api: &str, base: &str) -> Answer {
        let key = name.to_ascii_lowercase();
        let Some(vault) = self.deleted_vaults.get(&key) else {
            return self.deleted_vault(sub, name);
        };
        let location = vault.location.clone();
        let profile = profiles::profile("microsoft.keyvault/vaults");
        let new = NewOp {
            profile: &Profile {
                urls: OpUrls::Regional {
                    status: "operationStatuses",
                    status_query: "",
                    result: "operationResults",
                    result_query: "",
                },
                ..profile
            },
            kind: OpKind::Purge,
            target: &key,
            sub,
            group: "",
            namespace: "Microsoft.KeyVault",
            location: &location,
            api,
            secs: 10,
            outcome: Outcome::Succeeded,
            status: false,
            result: true,
            result_status: 200,
            result_body: false,
        };
        let (_, _, result_url) = self.start_op(base, new);
        let mut answer = Answer::empty(202);
        if let Some(url) = result_url {
            answer = answer.with("location", &url);
        }
        self.retry_after(answer, 10)
    }

    // ----- rules -------------------------------------------------------------------------

    /// PostgreSQL accepts one write at a time per server, children included.
    fn check_server_busy(&self, rp: &ResourcePath) -> Result<(), Answer> {
        let key = &rp.key;
        let marker = "/providers/microsoft.dbforpostgresql/flexibleservers/";
        let Some(at) = key.find(marker) else {
            return Ok(());
        };
        let rest = &key[at + marker.len()..];
        let server_end = at + marker.len() + rest.find('/').unwrap_or(rest.len());
        let server = &key[..server_end];
        let prefix = format!("{server}/");
        let busy = self
            .resources
            .range(server.to_owned()..)
            .take_while(|(k, _)| k.as_str() == server || k.starts_with(&prefix))
            .any(|(_, r)| r.busy.is_some());
        if busy {
            let name = server.rsplit('/').next().unwrap_or_default();
            return Err(Answer::error(
                409,
                "ServerIsBusy",
                &format!("Cannot complete operation while server '{name}' is busy processing another operation. Please try your operation later."),
            ));
        }
        Ok(())
    }

    /// The type-specific refusals ARM is known for.
    fn check_quirks(&self, rp: &ResourcePath, body: &Value) -> Result<(), Answer> {
        match rp.type_key().as_str() {
            "microsoft.cdn/profiles/afdendpoints/routes" => self.check_route(body),
            "microsoft.keyvault/vaults" => self.check_vault(rp, body),
            "microsoft.storage/storageaccounts" => {
                self.check_global_name(rp, "StorageAccountAlreadyTaken")
            }
            "microsoft.authorization/roleassignments" => self.check_principal(body),
            _ => Ok(()),
        }
    }

    /// Front Door: a route needs its origin group and an enabled origin in it.
    fn check_route(&self, body: &Value) -> Result<(), Answer> {
        let refuse = || {
            Answer::error(
                400,
                "BadRequest",
                "Please make sure that the originGroup is created successfully and at least one enabled origin is created under the origin group.",
            )
        };
        let Some(group) = body
            .pointer("/properties/originGroup/id")
            .and_then(Value::as_str)
        else {
            return Err(refuse());
        };
        let group_key = crate::path::key_of(&crate::path::segments(group));
        if self.visible(&group_key).is_none() {
            return Err(refuse());
        }
        let prefix = format!("{group_key}/origins/");
        let enabled = self
            .resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, r)| {
                r.visible
                    && r.state == "Succeeded"
                    && str_at(&r.body, "properties.enabledState").as_deref() != Some("Disabled")
            });
        if enabled {
            Ok(())
        } else {
            Err(refuse())
        }
    }

    /// Key Vault: a soft-deleted name is taken until recovered or purged.
    fn check_vault(&self, rp: &ResourcePath, body: &Value) -> Result<(), Answer> {
        let name = rp.name.to_ascii_lowercase();
        if self.deleted_vaults.contains_key(&name) {
            let recover = str_at(body, "properties.createMode")
                .is_some_and(|m| m.eq_ignore_ascii_case("recover"));
            if !recover {
                return Err(Answer::error(
                    409,
                    "ConflictError",
                    &format!("A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault. Follow this link https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft delete. (vault '{}')", rp.name),
                ));
            }
        }
        self.check_global_name(rp, "VaultAlreadyExists")
    }

    /// Names that are global across Azure (storage accounts, vaults).
    fn check_global_name(&self, rp: &ResourcePath, code: &str) -> Result<(), Answer> {
        let type_key = rp.type_key();
        let name = rp.name.to_ascii_lowercase();
        let taken = self.resources.values().any(|r| {
            r.type_key == type_key && r.name.to_ascii_lowercase() == name && r.key != rp.key
        });
        if taken {
            return Err(Answer::error(
                409,
                code,
                &format!("The name '{}' is already in use.", rp.name),
            ));
        }
        Ok(())
    }

    /// Role assignments: a managed identity is unknown to the directory for a while after
    /// its creation (replication delay).
    fn check_principal(&self, body: &Value) -> Result<(), Answer> {
        let Some(principal) = str_at(body, "properties.principalId") else {
            return Err(Answer::error_with_target(
                400,
                "InvalidRequestContent",
                "The request content was invalid: properties.principalId is required.",
                "properties.principalId",
            ));
        };
        let young = self.resources.values().any(|r| {
            r.type_key == "microsoft.managedidentity/userassignedidentities"
                && principal_id(&r.key).eq_ignore_ascii_case(&principal)
                && r.created.elapsed() < self.scaled(IDENTITY_REPLICATION_SECS)
        });
        if young {
            return Err(Answer::error(
                400,
                "PrincipalNotFound",
                &format!("Principal {} does not exist in the directory {TENANT}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype", principal.replace('-', "")),
            ));
        }
        Ok(())
    }

    // ----- rendering ---------------------------------------------------------------------

    /// The location of the tracked resource at the top of `rp` (children's operations are
    /// regional too).
    fn root_location(&self, rp: &ResourcePath) -> String {
        let mut key = Some(rp.key.clone());
        while let Some(k) = key {
            if let Some(location) = self
                .resources
                .get(&k)
                .and_then(|r| str_at(&r.body, "location"))
            {
                return location;
            }
            key = self.resources.get(&k).and_then(|r| r.parent_key.clone());
        }
        "global".into()
    }

    fn render_answer(&self, key: &str, status: u16) -> Answer {
        match self.resources.get(key) {
            Some(r) => Answer::json(status, &self.render(r)),
            None => Answer::empty(status),
        }
    }

    /// A resource as ARM answers it.
    fn render(&self, r: &Resource) -> Value {
        let profile = profiles::profile(&r.type_key);
        let mut out = Map::new();
        out.insert("id".into(), json!(render_id(&r.path, profile.id_case)));
        out.insert("name".into(), json!(r.name));
        let type_name = if profile.type_name.is_empty() {
            r.type_.as_str()
        } else {
            profile.type_name
        };
        out.insert("type".into(), json!(type_name));
        for key in [
            "kind",
            "location",
            "tags",
            "sku",
            "identity",
            "managedBy",
            "plan",
            "zones",
        ] {
            if let Some(v) = r.body.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
        if let (true, Some(location)) = (profile.display_location, str_at(&r.body, "location")) {
            out.insert("location".into(), json!(display_location(&location)));
        }
        let mut properties = match r.body.get("properties") {
            Some(Value::Object(p)) if r.parent_key.is_some() => p.clone(),
            _ => Map::new(),
        };
        properties.insert("provisioningState".into(), json!(r.state));
        out.insert("properties".into(), Value::Object(properties));
        let mut out = Value::Object(out);
        decorate(r, &mut out);
        remove_paths(&mut out, profile.write_only);
        out
    }
}

fn decorate(r: &Resource, out: &mut Value) {
    let location = str_at(&r.body, "location")
        .map(|l| normal_location(&l))
        .unwrap_or_default();
    let short = &stable_guid(&r.key)[..8];
    let props = |out: &mut Value| -> Map<String, Value> {
        out.get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut p = props(out);
    fn set(p: &mut Map<String, Value>, k: &str, v: Value) {
        p.entry(k.to_owned()).or_insert(v);
    }
    match r.type_key.as_str() {
        "microsoft.operationalinsights/workspaces" => {
            set(
                &mut p,
                "customerId",
                json!(stable_guid(&format!("{}#customer", r.key))),
            );
            set(&mut p, "retentionInDays", json!(30));
            set(&mut p, "source", json!("Azure"));
            set(&mut p, "sku", json!({"name": "pergb2018"}));
            if let Some(Value::String(name)) = p.get_mut("sku").and_then(|s| s.get_mut("name")) {
                *name = name.to_ascii_lowercase();
            }
        }
        "microsoft.app/containerapps" => {
            if let Some(env) = p.get("managedEnvironmentId").cloned() {
                set(&mut p, "environmentId", env);
            }
            set(
                &mut p,
                "latestRevisionName",
                json!(format!("{}--{}", r.name, &short[..7])),
            );
            set(&mut p, "outboundIpAddresses", json!(["20.62.233.198"]));
            if let Some(ingress) = p
                .get_mut("configuration")
                .and_then(|c| c.get_mut("ingress"))
                .and_then(Value::as_object_mut)
            {
                ingress.entry("fqdn").or_insert(json!(format!(
                    "{}.{short}.{location}.azurecontainerapps.io",
                    r.name
                )));
            }
            if let Some(template) = p.get_mut("template").and_then(Value::as_object_mut) {
                template
                    .entry("scale")
                    .or_insert(json!({"maxReplicas": 10}));
            }
        }
        "microsoft.app/managedenvironments" => {
            set(
                &mut p,
                "defaultDomain",
                json!(format!("{short}.{location}.azurecontainerapps.io")),
            );
            set(&mut p, "staticIp", json!("20.62.233.199"));
        }
        "microsoft.dbforpostgresql/flexibleservers" => {
            set(
                &mut p,
                "fullyQualifiedDomainName",
                json!(format!(
                    "{}.postgres.database.azure.com",
                    r.name.to_ascii_lowercase()
                )),
            );
            set(&mut p, "state", json!("Ready"));
        }
        "microsoft.storage/storageaccounts" => {
            let name = r.name.to_ascii_lowercase();
            set(
                &mut p,
                "primaryEndpoints",
                json!({
                    "blob": format!("https://{name}.blob.core.windows.net/"),
                    "queue": format!("https://{name}.queue.core.windows.net/"),
                    "table": format!("https://{name}.table.core.windows.net/"),
                    "file": format!("https://{name}.file.core.windows.net/"),
                }),
            );
            if let Some(Value::Object(sku)) = out.get_mut("sku") {
                let tier = if sku
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("Premium"))
                {
                    "Premium"
                } else {
                    "Standard"
                };
                sku.entry("tier").or_insert(json!(tier));
            }
        }
        "microsoft.keyvault/vaults" => {
            set(
                &mut p,
                "vaultUri",
                json!(format!(
                    "https://{}.vault.azure.net/",
                    r.name.to_ascii_lowercase()
                )),
            );
        }
        "microsoft.keyvault/vaults/secrets" => {
            let vault = r
                .parent_key
                .as_deref()
                .and_then(|k| k.rsplit('/').next())
                .unwrap_or_default();
            set(
                &mut p,
                "secretUri",
                json!(format!(
                    "https://{vault}.vault.azure.net/secrets/{}",
                    r.name
                )),
            );
        }
        "microsoft.managedidentity/userassignedidentities" => {
            set(&mut p, "principalId", json!(principal_id(&r.key)));
            set(
                &mut p,
                "clientId",
                json!(stable_guid(&format!("{}#client", r.key))),
            );
            set(&mut p, "tenantId", json!(TENANT));
        }
        "microsoft.cache/redis" => {
            set(
                &mut p,
                "hostName",
                json!(format!(
                    "{}.redis.cache.windows.net",
                    r.name.to_ascii_lowercase()
                )),
            );
            set(&mut p, "port", json!(6379));
            set(&mut p, "sslPort", json!(6380));
        }
        "microsoft.cdn/profiles/afdendpoints" => {
            set(
                &mut p,
                "hostName",
                json!(format!(
                    "{}-{short}.z01.azurefd.net",
                    r.name.to_ascii_lowercase()
                )),
            );
        }
        _ => {}
    }
    if r.parent_key.is_none() {
        // A resource group's properties are only its state.
        p.retain(|k, _| k == "provisioningState");
    }
    out["properties"] = Value::Object(p);
    if let Some(Value::Object(identity)) = out.get_mut("identity") {
        let system = identity
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("SystemAssigned"));
        if system {
            identity
                .entry("principalId")
                .or_insert(json!(stable_guid(&format!("{}#system", r.key))));
            identity.entry("tenantId").or_insert(json!(TENANT));
        }
    }
}

/// The principal id of a user-assigned identity.
fn principal_id(key: &str) -> String {
    stable_guid(&format!("{key}#principal"))
}

/// An id with the case rewriting its type gets from ARM.
fn render_id(path: &str, case: IdCase) -> String {
    match case {
        IdCase::AsSent => path.to_owned(),
        IdCase::Lower => path.to_ascii_lowercase(),
        IdCase::LowerTypes => {
            // Lower-case every segment that is a type: the odd positions after the last
            // `providers/{ns}`.
            let segments: Vec<&str> = path.split('/').collect();
            let Some(at) = segments.iter().rposition(|s| *s == "providers") else {
                return path.to_owned();
            };
            segments
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i > at + 1 && (i - at) % 2 == 0 {
                        s.to_ascii_lowercase()
                    } else {
                        (*s).to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        }
    }
}

fn deleted_vault_body(sub: &str, v: &DeletedVault) -> Value {
    let location = normal_location(&v.location);
    json!({
        "id": format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{}", v.name),
        "name": v.name,
        "type": "Microsoft.KeyVault/deletedVaults",
        "properties": {
            "vaultId": v.id,
            "location": location,
            "deletionDate": v.deleted,
            "scheduledPurgeDate": v.deleted,
            "purgeProtectionEnabled": false,
        },
    })
}

fn terminal_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "Succeeded",
        Outcome::Failed => "Failed",
        Outcome::Canceled => "Canceled",
    }
}

fn op_error(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Canceled => {
            json!({"code": "OperationCanceled", "message": "The operation was canceled (injected by kombiform-arm-standin)."})
        }
        _ => {
            json!({"code": "InternalOperationError", "message": "The operation failed (injected by kombiform-arm-standin)."})
        }
    }
}

fn group_not_found(group: &str) -> Answer {
    Answer::error(
        404,
        "ResourceGroupNotFound",
        &format!("Resource group '{group}' could not be found."),
    )
}

fn another_operation(rp: &ResourcePath) -> Answer {
    Answer::error(
        409,
        "AnotherOperationInProgress",
        &format!("Another operation on the resource '{}' is in progress; try again when it has finished.", rp.name),
    )
}

/// The lower-case subscription id of a key.
fn sub_of(key: &str) -> String {
    key.split('/')
        .nth(2)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The last type of a full type (`flexibleServers/databases` → `Databases`, capitalised).
fn last_type(type_: &str) -> String {
    let last = type_.rsplit('/').next().unwrap_or_default();
    let mut chars = last.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A string at a dotted path.
fn str_at(value: &Value, path: &str) -> Option<String> {
    let pointer = format!("/{}", path.replace('.', "/"));
    value
        .pointer(&pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn query_string(req: &Req) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &req.query {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_get_the_case_arm_gives_them() {
        let path = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.App/containerApps/Web";
        assert_eq!(
            render_id(path, IdCase::LowerTypes),
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.App/containerapps/Web"
        );
        assert_eq!(
            render_id(path, IdCase::Lower),
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.app/containerapps/web"
        );
        assert_eq!(render_id(path, IdCase::AsSent), path);
    }
}
