//! The operations callers use: read one resource, list a collection (following `nextLink`),
//! and PUT, DELETE or POST until the long-running operation behind them has ended.
//!
//! Which URL to poll, in ARM's order: `Azure-AsyncOperation` (an operation-status resource,
//! `{"status": "InProgress"|"Succeeded"|"Failed"|"Canceled", "error"?}`; decided on `status`
//! alone, since some providers send `"error":{"code":"None"}` while in progress), then
//! `Location` (202 while running, then the answer the request would have had: a 4xx there
//! is the operation's failure), then the
//! resource itself until its `provisioningState` is terminal (absent means Succeeded). Every
//! wait lasts the `Retry-After` of the latest answer that had one (else the default poll
//! interval). A PUT finished through `Azure-AsyncOperation` reads the resource once more for
//! its final body.

use reqwest::Method;
use serde_json::Value;

use crate::client::{Arm, Reply};
use crate::error::{ArmError, ErrorDetail, Terminal};
use std::time::Duration;

/// The result of [`Arm::put_and_wait`].
#[derive(Clone, Debug, PartialEq)]
pub struct Put {
    /// The status of ARM's first answer: 200 (replaced), 201 (created) or 202 (accepted).
    pub status: u16,
    /// The resource as ARM holds it once the operation has succeeded.
    pub resource: Value,
}

/// The result of [`Arm::delete_and_wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The resource existed and is gone.
    Deleted,
    /// There was nothing to delete (204, or 404).
    Absent,
}

/// A state of a long-running operation.
enum State {
    Running,
    Succeeded,
    Ended(Terminal),
}

fn state(value: Option<&str>) -> State {
    match value {
        None => State::Succeeded,
        Some(s) if s.eq_ignore_ascii_case("succeeded") => State::Succeeded,
        Some(s) if s.eq_ignore_ascii_case("failed") => State::Ended(Terminal::Failed),
        Some(s) if s.eq_ignore_ascii_case("canceled") || s.eq_ignore_ascii_case("cancelled") => {
            State::Ended(Terminal::Canceled)
        }
        Some(_) => State::Running,
    }
}

fn provisioning_state(resource: &Value) -> Option<&str> {
    resource
        .pointer("/properties/provisioningState")
        .or_else(|| resource.get("provisioningState"))
        .and_then(Value::as_str)
}

/// The error an ended operation reports, or a plain one naming how it ended.
fn operation_error(body: &Value, how: Terminal) -> ErrorDetail {
    let error = body
        .get("error")
        .or_else(|| body.pointer("/properties/error"))
        .and_then(|e| serde_json::from_value::<ErrorDetail>(e.clone()).ok())
        .filter(|e| !e.code.is_empty());
    error.unwrap_or_else(|| ErrorDetail {
        code: format!("Operation{how}"),
        message: format!("the operation ended {how} without an error"),
        target: None,
        details: Vec::new(),
    })
}

/// Polling state of one long-running operation.
struct Wait {
    request: String,
    started: Duration,
    interval: Option<Duration>,
}

impl Arm {
    /// The resource `id` at `api_version`; None when ARM answers 404 (the resource, its
    /// resource group or its parent does not exist).
    pub async fn get(&self, id: &str, api_version: &str) -> Result<Option<Value>, ArmError> {
        let request = format!("GET {id}");
        let url = self.url(id, api_version)?;
        let reply = self.send(&request, Method::GET, &url, None).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let reply = reply.check(&request)?;
        Ok(Some(reply.json(&request)?.unwrap_or(Value::Null)))
    }

    /// Every item of the collection `path` (`…/providers/Microsoft.App/containerApps`), all
    /// pages, in ARM's order.
    pub async fn list(&self, path: &str, api_version: &str) -> Result<Vec<Value>, ArmError> {
        let request = format!("GET {path}");
        let mut url = self.url(path, api_version)?;
        let mut items = Vec::new();
        loop {
            let reply = self
                .send(&request, Method::GET, &url, None)
                .await?
                .check(&request)?;
            let page = reply.json(&request)?.unwrap_or(Value::Null);
            match page.get("value") {
                Some(Value::Array(values)) => items.extend(values.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(_) => {
                    return Err(ArmError::Protocol {
                        request,
                        message: "a list page whose \"value\" is not an array".into(),
                    })
                }
            }
            let next = match page.get("nextLink").and_then(Value::as_str) {
                Some(next) if !next.trim().is_empty() => self.followed_url(&request, next)?,
                _ => return Ok(items),
            };
            if next == url {
                return Err(ArmError::Protocol {
                    request,
                    message: "a nextLink pointing at the page it came from".into(),
                });
            }
            url = next;
        }
    }

    /// PUT `body` to `id` (create or replace) and wait until the operation has ended; the
    /// result carries the first status and the final resource.
    pub async fn put_and_wait(
        &self,
        id: &str,
        api_version: &str,
        body: &Value,
    ) -> Result<Put, ArmError> {
        let request = format!("PUT {id}");
        let url = self.url(id, api_version)?;
        let reply = self
            .send(&request, Method::PUT, &url, Some(body))
            .await?
            .check(&request)?;
        let status = reply.status;
        let mut wait = self.wait(&request, &reply);
        if let Some(status_url) = reply.url_header("azure-asyncoperation") {
            let status_url = self.followed_url(&request, status_url)?;
            self.wait_for_status(&mut wait, &status_url).await?;
            let resource = self.get_final(&request, &url).await?;
            return Ok(Put { status, resource });
        }
        if let (201 | 202, Some(location)) = (status, reply.url_header("location")) {
            let location = self.followed_url(&request, location)?;
            let resource = match self.wait_for_location(&mut wait, &location).await? {
                Some(resource) => resource,
                None => self.get_final(&request, &url).await?,
            };
            return Ok(Put { status, resource });
        }
        let body = reply.json(&request)?;
        let resource = match (status, body) {
            (202, _) | (_, None) => self.wait_for_provisioning(&mut wait, &url).await?,
            (_, Some(body)) => match state(provisioning_state(&body)) {
                State::Succeeded => body,
                State::Ended(how) => return Err(self.ended(&wait, &body, how)),
                State::Running => self.wait_for_provisioning(&mut wait, &url).await?,
            },
        };
        Ok(Put { status, resource })
    }

    /// DELETE `id` and wait until it is gone. A resource that was not there (204, or 404 for
    /// the resource, its group or its parent) is [`Deleted::Absent`].
    pub async fn delete_and_wait(&self, id: &str, api_version: &str) -> Result<Deleted, ArmError> {
        let request = format!("DELETE {id}");
        let url = self.url(id, api_version)?;
        let reply = self.send(&request, Method::DELETE, &url, None).await?;
        match reply.status {
            404 | 204 => return Ok(Deleted::Absent),
            _ => {}
        }
        let reply = reply.check(&request)?;
        let mut wait = self.wait(&request, &reply);
        if let Some(status_url) = reply.url_header("azure-asyncoperation") {
            let status_url = self.followed_url(&request, status_url)?;
            self.wait_for_status(&mut wait, &status_url).await?;
        } else if let Some(location) = reply.url_header("location") {
            let location = self.followed_url(&request, location)?;
            self.wait_for_location(&mut wait, &location).await?;
        } else if reply.status == 202 {
            self.wait_until_gone(&mut wait, &url).await?;
        }
        Ok(Deleted::Deleted)
    }

    /// POST `body` to the action `path` (`…/purge`, `…/listKeys`) and wait for its result:
    /// the final body, or None when the action has none. POST is retried only on 429 and on
    /// connections that could not be made.
    pub async fn post_and_wait(
        &self,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ArmError> {
        let request = format!("POST {path}");
        let url = self.url(path, api_version)?;
        let reply = self
            .send(&request, Method::POST, &url, body)
            .await?
            .check(&request)?;
        let mut wait = self.wait(&request, &reply);
        let location = reply.url_header("location");
        if let Some(status_url) = reply.url_header("azure-asyncoperation") {
            let status_url = self.followed_url(&request, status_url)?;
            self.wait_for_status(&mut wait, &status_url).await?;
            return match location {
                Some(location) => {
                    let location = self.followed_url(&request, location)?;
                    self.wait_for_location(&mut wait, &location).await
                }
                None => Ok(None),
            };
        }
        if let (202, Some(location)) = (reply.status, location) {
            let location = self.followed_url(&request, location)?;
            return self.wait_for_location(&mut wait, &location).await;
        }
        reply.json(&request)
    }

    fn wait(&self, request: &str, first: &Reply) -> Wait {
        Wait {
            request: request.to_owned(),
            started: self.inner.clock.now(),
            interval: first.retry_after(),
        }
    }

    /// Sleeps one poll interval, or fails when the operation has run out of time.
    async fn pause(&self, wait: &Wait) -> Result<(), ArmError> {
        let inner = &self.inner;
        let waited = inner.clock.now().saturating_sub(wait.started);
        if waited >= inner.retry.operation_timeout {
            return Err(ArmError::Timeout {
                request: wait.request.clone(),
                waited_secs: waited.as_secs(),
            });
        }
        let interval = wait
            .interval
            .unwrap_or(inner.retry.default_poll_interval)
            .min(inner.retry.max_backoff);
        inner.clock.sleep(interval).await;
        Ok(())
    }

    /// One poll: GET `url`, remembering its `Retry-After`.
    async fn poll(&self, wait: &mut Wait, url: &reqwest::Url) -> Result<Reply, ArmError> {
        self.pause(wait).await?;
        let reply = self.send(&wait.request, Method::GET, url, None).await?;
        if let Some(interval) = reply.retry_after() {
            wait.interval = Some(interval);
        }
        Ok(reply)
    }

    fn ended(&self, wait: &Wait, body: &Value, how: Terminal) -> ArmError {
        ArmError::Operation {
            request: wait.request.clone(),
            status: how,
            error: operation_error(body, how),
        }
    }

    /// Polls an operation-status resource until its `status` is terminal.
    async fn wait_for_status(&self, wait: &mut Wait, url: &reqwest::Url) -> Result<(), ArmError> {
        loop {
            // A 4xx or 5xx here means the status could not be read, not that the operation
            // failed: it is an error of its own.
            let reply = self.poll(wait, url).await?.check(&wait.request)?;
            let body = reply.json(&wait.request)?.unwrap_or(Value::Null);
            let status = body.get("status").and_then(Value::as_str);
            if status.is_none() {
                return Err(ArmError::Protocol {
                    request: wait.request.clone(),
                    message: "an operation status without a \"status\"".into(),
                });
            }
            match state(status) {
                State::Running => continue,
                State::Succeeded => return Ok(()),
                State::Ended(how) => return Err(self.ended(wait, &body, how)),
            }
        }
    }

    /// Polls a `Location` URL until it stops answering 202; its final body, if any.
    async fn wait_for_location(
        &self,
        wait: &mut Wait,
        url: &reqwest::Url,
    ) -> Result<Option<Value>, ArmError> {
        loop {
            let reply = self.poll(wait, url).await?;
            match reply.status {
                202 => continue,
                204 => return Ok(None),
                // The answer the request would have had: a 4xx is the operation's failure.
                400..=499 => {
                    return Err(ArmError::Operation {
                        request: wait.request.clone(),
                        status: Terminal::Failed,
                        error: ErrorDetail::from_response(reply.status, &reply.body),
                    })
                }
                _ => {
                    let reply = reply.check(&wait.request)?;
                    return reply.json(&wait.request);
                }
            }
        }
    }

    /// Polls the resource until its `provisioningState` is terminal.
    async fn wait_for_provisioning(
        &self,
        wait: &mut Wait,
        url: &reqwest::Url,
    ) -> Result<Value, ArmError> {
        loop {
            let reply = self.poll(wait, url).await?;
            if reply.status == 404 {
                // Not visible yet (a create accepted with 202 shows only when done).
                continue;
            }
            let reply = reply.check(&wait.request)?;
            let body = reply.json(&wait.request)?.unwrap_or(Value::Null);
            match state(provisioning_state(&body)) {
                State::Running => continue,
                State::Succeeded => return Ok(body),
                State::Ended(how) => return Err(self.ended(wait, &body, how)),
            }
        }
    }

    /// Polls the resource until it answers 404.
    async fn wait_until_gone(&self, wait: &mut Wait, url: &reqwest::Url) -> Result<(), ArmError> {
        loop {
            let reply = self.poll(wait, url).await?;
            if reply.status == 404 {
                return Ok(());
            }
            reply.check(&wait.request)?;
        }
    }

    /// The resource after its operation succeeded; it must exist.
    async fn get_final(&self, request: &str, url: &reqwest::Url) -> Result<Value, ArmError> {
        let reply = self.send(request, Method::GET, url, None).await?;
        let reply = reply.check(request)?;
        reply.json(request)?.ok_or_else(|| ArmError::Protocol {
            request: request.to_owned(),
            message: "the resource came back empty after its operation succeeded".into(),
        })
    }
}
