//! The AWS side of the oracle test: Parameter Store parameters and Secrets Manager secrets in
//! moto, in two accounts (the second reached through STS AssumeRole, as ESO's store `role`
//! does) and two regions; the changes a test step makes to them, and the events AWS would emit
//! for each, in AWS's shapes.

use std::collections::BTreeMap;

use rand::RngExt as _;
use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};

pub const ACCOUNTS: [&str; 2] = ["123456789012", "210987654321"];
pub const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
pub const LABEL: &str = "prod";
pub const TEAMS: [&str; 2] = ["red", "blue"];

/// Where an item lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub account: &'static str,
    pub region: &'static str,
}

impl Scope {
    pub fn all() -> Vec<Scope> {
        ACCOUNTS
            .iter()
            .flat_map(|a| {
                REGIONS.iter().map(move |r| Scope {
                    account: a,
                    region: r,
                })
            })
            .collect()
    }

    /// The IAM role a store names to read this account (moto's STS mints credentials of the
    /// role's account); `None` for the default account, read without a role.
    pub fn role(self) -> Option<String> {
        (self.account != ACCOUNTS[0]).then(|| format!("arn:aws:iam::{}:role/oracle", self.account))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Ps,
    Sm,
}

/// One parameter or secret, as the test last left it.
#[derive(Debug, Clone)]
pub struct Item {
    pub service: Service,
    pub scope: Scope,
    pub name: String,
    pub exists: bool,
    /// Parameter versions written (1-based), or Secrets Manager version ids, oldest first.
    pub versions: Vec<String>,
    /// Parameter Store: the version carrying `LABEL`, if any.
    pub label_on: Option<usize>,
    pub team: Option<&'static str>,
    /// Secrets Manager: soft-deleted (restorable).
    pub deleted: bool,
    pub arn: String,
}

/// The change a step made, for the report.
#[derive(Debug, Clone)]
pub struct Change {
    pub op: &'static str,
    pub item: String,
    pub scope: Scope,
    /// What was published to the topic (EventBridge events, in AWS's shapes).
    pub events: Vec<Value>,
}

/// The AWS universe of one run: every name exists in every scope, so a change in one region or
/// account is a trap for readers of the same name elsewhere.
pub struct World {
    pub run: String,
    pub items: Vec<Item>,
    counter: u64,
    clients: BTreeMap<Scope, (aws_sdk_ssm::Client, aws_sdk_secretsmanager::Client)>,
}

fn ps_names(run: &str) -> Vec<String> {
    [
        "app/db/password",
        "app/db/user",
        "app/api/key",
        "app/apix/key",
        "svc/token",
        "pfx/db/password",
        "pfx/cache",
    ]
    .iter()
    .map(|n| format!("/{run}/{n}"))
    .chain([format!("{run}-flat")])
    .collect()
}

fn sm_names(run: &str) -> Vec<String> {
    [
        "app/db",
        "app/api",
        "app-worker",
        "db-backup",
        "p/app/db",
        format!("p/{run}/app/db").as_str(),
    ]
    .iter()
    .map(|n| format!("{run}/{n}"))
    .collect()
}

/// The Secrets Manager name whose prefixed double (`<run>/p/` + name) the double-prefix trap
/// reads (ESO's find by name lists names and reads `prefix + name`).
pub fn sm_double_prefix(run: &str) -> (String, String) {
    (format!("{run}/app/db"), format!("{run}/p/"))
}

impl World {
    pub async fn new(stack: &super::Stack, run: &str) -> World {
        let base = stack.aws_config().await;
        let mut clients = BTreeMap::new();
        for scope in Scope::all() {
            let mut conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(scope.region))
                .endpoint_url(stack.get("AWS_ENDPOINT_URL"));
            conf = match scope.role() {
                None => conf.credentials_provider(base.credentials_provider().unwrap()),
                Some(role) => conf.credentials_provider(
                    aws_config::sts::AssumeRoleProvider::builder(role)
                        .session_name("oracle")
                        .configure(&base)
                        .build()
                        .await,
                ),
            };
            let conf = conf.load().await;
            clients.insert(
                scope,
                (
                    aws_sdk_ssm::Client::new(&conf),
                    aws_sdk_secretsmanager::Client::new(&conf),
                ),
            );
        }
        let mut w = World {
            run: run.to_owned(),
            items: Vec::new(),
            counter: 0,
            clients,
        };
        for scope in Scope::all() {
            for name in ps_names(run) {
                let arn = format!(
                    "arn:aws:ssm:{}:{}:parameter{}{name}",
                    scope.region,
                    scope.account,
                    if name.starts_with('/') { "" } else { "/" }
                );
                w.items.push(Item {
                    service: Service::Ps,
                    scope,
                    name,
                    exists: false,
                    versions: Vec::new(),
                    label_on: None,
                    team: None,
                    deleted: false,
                    arn,
                });
            }
            for name in sm_names(run) {
                w.items.push(Item {
                    service: Service::Sm,
                    scope,
                    name,
                    exists: false,
                    versions: Vec::new(),
                    label_on: None,
                    team: None,
                    deleted: false,
                    arn: String::new(),
                });
            }
        }
        // Two versions of each (readers of version 1, a label or AWSPREVIOUS have something to
        // read), the label on version 1, a team tag on half of them.
        for i in 0..w.items.len() {
            let team = TEAMS[i % 2];
            match w.items[i].service {
                Service::Ps => {
                    w.ps_put(i).await;
                    w.ps_put(i).await;
                    w.ps_label(i, 1).await;
                    w.ps_tag(i, Some(team)).await;
                }
                Service::Sm => {
                    w.sm_create(i).await;
                    w.sm_put(i).await;
                    w.sm_tag(i, Some(team)).await;
                }
            }
        }
        w
    }

    fn ssm(&self, scope: Scope) -> &aws_sdk_ssm::Client {
        &self.clients[&scope].0
    }

    fn sm(&self, scope: Scope) -> &aws_sdk_secretsmanager::Client {
        &self.clients[&scope].1
    }

    /// A value never written before (JSON, so `extract` can read it too).
    fn value(&mut self) -> String {
        self.counter += 1;
        json!({"v": format!("{}-{}", self.run, self.counter)}).to_string()
    }

    async fn ps_put(&mut self, i: usize) -> &'static str {
        let value = self.value();
        let (scope, name) = (self.items[i].scope, self.items[i].name.clone());
        let out = self
            .ssm(scope)
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PutParameter {name}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            });
        let item = &mut self.items[i];
        let op = if item.exists { "Update" } else { "Create" };
        item.exists = true;
        if op == "Create" {
            item.versions.clear();
            item.label_on = None;
            item.team = None;
        }
        item.versions.push(out.version().to_string());
        op
    }

    async fn ps_label(&mut self, i: usize, version: usize) {
        let item = &self.items[i];
        self.ssm(item.scope)
            .label_parameter_version()
            .name(&item.name)
            .parameter_version(version as i64)
            .labels(LABEL)
            .send()
            .await
            .unwrap();
        self.items[i].label_on = Some(version);
    }

    async fn ps_unlabel(&mut self, i: usize) {
        let item = &self.items[i];
        let v = item.label_on.expect("labelled");
        self.ssm(item.scope)
            .unlabel_parameter_version()
            .name(&item.name)
            .parameter_version(v as i64)
            .labels(LABEL)
            .send()
            .await
            .unwrap();
        self.items[i].label_on = None;
    }

    async fn ps_tag(&mut self, i: usize, team: Option<&'static str>) {
        let item = &self.items[i];
        let key = format!("{}-team", self.run);
        let c = self.ssm(item.scope);
        match team {
            Some(t) => {
                c.add_tags_to_resource()
                    .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
                    .resource_id(&item.name)
                    .tags(
                        aws_sdk_ssm::types::Tag::builder()
                            .key(key)
                            .value(t)
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                c.remove_tags_from_resource()
                    .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
                    .resource_id(&item.name)
                    .tag_keys(key)
                    .send()
                    .await
                    .unwrap();
            }
        }
        self.items[i].team = team;
    }

    async fn ps_delete(&mut self, names: &[usize]) {
        let scope = self.items[names[0]].scope;
        let list: Vec<String> = names.iter().map(|&i| self.items[i].name.clone()).collect();
        if list.len() == 1 {
            self.ssm(scope)
                .delete_parameter()
                .name(&list[0])
                .send()
                .await
                .unwrap();
        } else {
            self.ssm(scope)
                .delete_parameters()
                .set_names(Some(list))
                .send()
                .await
                .unwrap();
        }
        for &i in names {
            let item = &mut self.items[i];
            item.exists = false;
            item.versions.clear();
            item.label_on = None;
            item.team = None;
        }
    }

    async fn sm_create(&mut self, i: usize) {
        let value = self.value();
        let item = &self.items[i];
        let out = self
            .sm(item.scope)
            .create_secret()
            .name(&item.name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateSecret {}: {}",
                    item.name,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            });
        let item = &mut self.items[i];
        item.exists = true;
        item.deleted = false;
        item.team = None;
        item.arn = out.arn().unwrap().to_owned();
        item.versions = vec![out.version_id().unwrap().to_owned()];
    }

    async fn sm_put(&mut self, i: usize) {
        let value = self.value();
        let item = &self.items[i];
        let out = self
            .sm(item.scope)
            .put_secret_value()
            .secret_id(&item.name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
        self.items[i]
            .versions
            .push(out.version_id().unwrap().to_owned());
    }

    /// Moves AWSCURRENT back to the version before (AWSPREVIOUS then names the newer one).
    async fn sm_stage_back(&mut self, i: usize) {
        let item = &self.items[i];
        let n = item.versions.len();
        let (newest, older) = (item.versions[n - 1].clone(), item.versions[n - 2].clone());
        self.sm(item.scope)
            .update_secret_version_stage()
            .secret_id(&item.name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(&older)
            .remove_from_version_id(&newest)
            .send()
            .await
            .unwrap();
        let item = &mut self.items[i];
        item.versions.swap(n - 1, n - 2);
    }

    async fn sm_tag(&mut self, i: usize, team: Option<&'static str>) {
        let item = &self.items[i];
        let key = format!("{}-team", self.run);
        let c = self.sm(item.scope);
        match team {
            Some(t) => {
                c.tag_resource()
                    .secret_id(&item.name)
                    .tags(
                        aws_sdk_secretsmanager::types::Tag::builder()
                            .key(key)
                            .value(t)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            None => {
                c.untag_resource()
                    .secret_id(&item.name)
                    .tag_keys(key)
                    .send()
                    .await
                    .unwrap();
            }
        }
        self.items[i].team = team;
    }

    async fn sm_delete(&mut self, i: usize) {
        let item = &self.items[i];
        self.sm(item.scope)
            .delete_secret()
            .secret_id(&item.name)
            .recovery_window_in_days(7)
            .send()
            .await
            .unwrap();
        self.items[i].deleted = true;
    }

    async fn sm_force_delete(&mut self, i: usize) {
        let item = &self.items[i];
        self.sm(item.scope)
            .delete_secret()
            .secret_id(&item.name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
        let item = &mut self.items[i];
        item.exists = false;
        item.deleted = false;
        item.versions.clear();
        item.team = None;
    }

    async fn sm_restore(&mut self, i: usize) {
        let item = &self.items[i];
        self.sm(item.scope)
            .restore_secret()
            .secret_id(&item.name)
            .send()
            .await
            .unwrap();
        self.items[i].deleted = false;
    }

    /// Makes one random change to one of `candidates` (item indexes), and returns it with the
    /// events AWS would emit for it.
    pub async fn change(&mut self, rng: &mut impl rand::Rng, candidates: &[usize]) -> Change {
        let i = *candidates.choose(rng).expect("candidates");
        let (service, scope, name) = {
            let it = &self.items[i];
            (it.service, it.scope, it.name.clone())
        };
        let roll: u32 = rng.random_range(0..100);
        // A new name next to this one: what `find` readers of its path or name pick up.
        if roll < 10 && (service == Service::Sm || name.starts_with('/')) {
            self.counter += 1;
            let new_name = match service {
                Service::Ps => format!("{}/new{}", name.rsplit_once('/').unwrap().0, self.counter),
                // `name-newN` shares `name` as a string prefix: Secrets Manager's path filter.
                Service::Sm => format!("{name}-new{}", self.counter),
            };
            let arn = match service {
                Service::Ps => format!(
                    "arn:aws:ssm:{}:{}:parameter{new_name}",
                    scope.region, scope.account
                ),
                Service::Sm => String::new(),
            };
            self.items.push(Item {
                service,
                scope,
                name: new_name,
                exists: false,
                versions: Vec::new(),
                label_on: None,
                team: None,
                deleted: false,
                arn,
            });
            let j = self.items.len() - 1;
            return Box::pin(self.change(rng, &[j])).await;
        }
        match service {
            Service::Ps => {
                let item = &self.items[i];
                if !item.exists {
                    let op = self.ps_put(i).await;
                    return self.ps_event(i, op);
                }
                match roll {
                    0..45 => {
                        let op = self.ps_put(i).await;
                        self.ps_event(i, op)
                    }
                    45..60 => {
                        let latest = self.items[i].versions.len();
                        let target = if self.items[i].label_on == Some(latest) {
                            1
                        } else {
                            latest
                        };
                        self.ps_label(i, target).await;
                        self.ps_event(i, "LabelParameterVersion")
                    }
                    60..67 if self.items[i].label_on.is_some() => {
                        let v = self.items[i].label_on.unwrap();
                        self.ps_unlabel(i).await;
                        cloudtrail(
                            "ssm",
                            scope,
                            "UnlabelParameterVersion",
                            json!({"name": name, "parameterVersion": v, "labels": [LABEL]}),
                            json!({"invalidLabels": [], "removedLabels": [LABEL]}),
                            "Unlabel",
                            &name,
                        )
                    }
                    67..82 => {
                        let team = match self.items[i].team {
                            Some(t) if rng.random_bool(0.5) => {
                                Some(if t == TEAMS[0] { TEAMS[1] } else { TEAMS[0] })
                            }
                            Some(_) => None,
                            None => Some(*TEAMS.choose(rng).unwrap()),
                        };
                        self.ps_tag(i, team).await;
                        let key = format!("{}-team", self.run);
                        match team {
                            Some(t) => cloudtrail(
                                "ssm",
                                scope,
                                "AddTagsToResource",
                                json!({"resourceType": "Parameter", "resourceId": name, "tags": [{"key": key, "value": t}]}),
                                Value::Null,
                                "Tag",
                                &name,
                            ),
                            None => cloudtrail(
                                "ssm",
                                scope,
                                "RemoveTagsFromResource",
                                json!({"resourceType": "Parameter", "resourceId": name, "tagKeys": [key]}),
                                Value::Null,
                                "Untag",
                                &name,
                            ),
                        }
                    }
                    82..91 => {
                        self.ps_delete(&[i]).await;
                        self.ps_event(i, "Delete")
                    }
                    _ => {
                        // DeleteParameters (plural) of this one and a sibling that exists:
                        // EventBridge's Parameter Store Change is not documented for it, the
                        // CloudTrail record names both.
                        let sibling = self.items.iter().position(|o| {
                            o.service == Service::Ps
                                && o.scope == scope
                                && o.exists
                                && o.name != name
                        });
                        let mut list = vec![i];
                        list.extend(sibling);
                        let names: Vec<String> =
                            list.iter().map(|&j| self.items[j].name.clone()).collect();
                        self.ps_delete(&list).await;
                        cloudtrail(
                            "ssm",
                            scope,
                            "DeleteParameters",
                            json!({"names": names}),
                            json!({"deletedParameters": names, "invalidParameters": []}),
                            "DeleteParameters",
                            &names.join(","),
                        )
                    }
                }
            }
            Service::Sm => {
                let item = &self.items[i];
                if !item.exists {
                    self.sm_create(i).await;
                    let arn = self.items[i].arn.clone();
                    return cloudtrail(
                        "secretsmanager",
                        scope,
                        "CreateSecret",
                        json!({"name": name, "clientRequestToken": uuid::Uuid::new_v4().to_string()}),
                        json!({"arn": arn, "versionId": self.items[i].versions[0]}),
                        "Create",
                        &name,
                    );
                }
                if item.deleted {
                    self.sm_restore(i).await;
                    let arn = item_arn(&self.items[i]);
                    return cloudtrail(
                        "secretsmanager",
                        scope,
                        "RestoreSecret",
                        json!({"secretId": name}),
                        json!({"arn": arn, "name": name}),
                        "Restore",
                        &name,
                    );
                }
                let arn = item_arn(&self.items[i]);
                // Staging back needs a version before the current one (a secret created again
                // after a forced delete has one version only): put a value instead.
                let roll = if (50..65).contains(&roll) && self.items[i].versions.len() < 2 {
                    0
                } else {
                    roll
                };
                match roll {
                    0..50 => {
                        self.sm_put(i).await;
                        let v = self.items[i].versions.last().unwrap().clone();
                        // Rotation tooling passes the full ARN; people pass names.
                        let id = if rng.random_bool(0.5) {
                            arn.clone()
                        } else {
                            name.clone()
                        };
                        cloudtrail(
                            "secretsmanager",
                            scope,
                            "PutSecretValue",
                            json!({"secretId": id, "clientRequestToken": v}),
                            json!({"arn": arn, "versionId": v, "versionStages": ["AWSCURRENT"]}),
                            "Put",
                            &name,
                        )
                    }
                    50..65 => {
                        self.sm_stage_back(i).await;
                        let v = self.items[i].versions.last().unwrap().clone();
                        native_label_updated(scope, &name, &arn, &v)
                    }
                    65..82 => {
                        let team = match self.items[i].team {
                            Some(_) => None,
                            None => Some(*TEAMS.choose(rng).unwrap()),
                        };
                        self.sm_tag(i, team).await;
                        let key = format!("{}-team", self.run);
                        match team {
                            Some(t) => cloudtrail(
                                "secretsmanager",
                                scope,
                                "TagResource",
                                json!({"secretId": name, "tags": [{"key": key, "value": t}]}),
                                Value::Null,
                                "Tag",
                                &name,
                            ),
                            None => cloudtrail(
                                "secretsmanager",
                                scope,
                                "UntagResource",
                                json!({"secretId": name, "tagKeys": [key]}),
                                Value::Null,
                                "Untag",
                                &name,
                            ),
                        }
                    }
                    82..92 => {
                        // Deleted at once: the name can be created again (with a new ARN).
                        self.sm_force_delete(i).await;
                        cloudtrail(
                            "secretsmanager",
                            scope,
                            "DeleteSecret",
                            json!({"secretId": name, "forceDeleteWithoutRecovery": true}),
                            json!({"arn": arn, "name": name, "deletionDate": "Dec 1, 2026, 12:00:00 AM"}),
                            "ForceDelete",
                            &name,
                        )
                    }
                    _ => {
                        self.sm_delete(i).await;
                        cloudtrail(
                            "secretsmanager",
                            scope,
                            "DeleteSecret",
                            json!({"secretId": name, "recoveryWindowInDays": 7}),
                            json!({"arn": arn, "name": name, "deletionDate": "Dec 8, 2026, 12:00:00 AM"}),
                            "Delete",
                            &name,
                        )
                    }
                }
            }
        }
    }

    /// The native `Parameter Store Change` event.
    fn ps_event(&self, i: usize, op: &'static str) -> Change {
        let it = &self.items[i];
        let event = json!({
            "version": "0", "id": uuid::Uuid::new_v4().to_string(),
            "detail-type": "Parameter Store Change", "source": "aws.ssm",
            "account": it.scope.account, "time": now(), "region": it.scope.region,
            "resources": [it.arn],
            "detail": {"name": it.name, "type": "SecureString", "operation": op, "description": ""}
        });
        Change {
            op,
            item: it.name.clone(),
            scope: it.scope,
            events: vec![event],
        }
    }

    /// Items that exist, by service and scope (what a store can be pointed at).
    pub fn existing(&self, service: Service, scope: Scope) -> Vec<usize> {
        (0..self.items.len())
            .filter(|&i| {
                let it = &self.items[i];
                it.service == service && it.scope == scope && it.exists && !it.deleted
            })
            .collect()
    }
}

fn item_arn(it: &Item) -> String {
    it.arn.clone()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// An `AWS API Call via CloudTrail` event as EventBridge delivers it.
fn cloudtrail(
    service: &str,
    scope: Scope,
    call: &str,
    request: Value,
    response: Value,
    op: &'static str,
    item: &str,
) -> Change {
    let event = json!({
        "version": "0", "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "AWS API Call via CloudTrail", "source": format!("aws.{service}"),
        "account": scope.account, "time": now(), "region": scope.region, "resources": [],
        "detail": {
            "eventVersion": "1.08", "eventTime": now(),
            "eventSource": format!("{service}.amazonaws.com"), "eventName": call,
            "awsRegion": scope.region, "sourceIPAddress": "203.0.113.10",
            "userAgent": "oracle-test", "requestParameters": request, "responseElements": response,
            "requestID": uuid::Uuid::new_v4().to_string(), "eventID": uuid::Uuid::new_v4().to_string(),
            "readOnly": false, "eventType": "AwsApiCall", "managementEvent": true,
            "recipientAccountId": scope.account, "eventCategory": "Management"
        }
    });
    Change {
        op,
        item: item.to_owned(),
        scope,
        events: vec![event],
    }
}

/// Secrets Manager's native `Secret Label Updated` (AWSCURRENT moved).
fn native_label_updated(scope: Scope, name: &str, arn: &str, version: &str) -> Change {
    let event = json!({
        "version": "0", "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
        "account": scope.account, "time": now(), "region": scope.region, "resources": [arn],
        "detail": {"name": name, "labelUpdated": "AWSCURRENT", "versionId": version}
    });
    Change {
        op: "StageMove",
        item: name.to_owned(),
        scope,
        events: vec![event],
    }
}
