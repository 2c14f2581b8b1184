//! `elect` and `services`: the leader election, the service registry and
//! discovery of [`anykv::recipes`] from the command line.

use std::collections::BTreeMap;
use std::sync::Arc;

use anykv::recipes::{
    Discovery, DiscoveryOptions, Election, ElectionOptions, Instance, Registry, RegistryOptions,
    RegistryState, RegistryStatus, DEFAULT_SERVICES_PREFIX,
};
use anykv::Store;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::cli::{ElectArgs, ServicesAction, ServicesArgs};
use crate::connect::{close_store, open_store};
use crate::exit::CliError;
use crate::hold::{finish, hold_until_signal, run_command, show_duration, Ended};
use crate::output::{self, Out};
use crate::signals::Interrupts;

/// `anykv elect`.
pub async fn elect(
    url: &str,
    args: ElectArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let store = open_store(url).await?;
    let result = elect_on(store.clone(), args, out, interrupts).await;
    close_store(&store).await;
    result
}

async fn elect_on(
    store: Arc<dyn Store>,
    args: ElectArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let election = Election::new(store, ElectionOptions::new().with_ttl(args.ttl));
    let value = args.value.clone().unwrap_or_default();
    let leadership = tokio::select! {
        r = election.campaign(&args.name, value) => r?,
        signal = interrupts.first() => return Err(CliError::interrupted(signal)),
    };
    let token = leadership.token();
    let what = format!("leadership of {:?}", args.name);
    let ended = if args.command.is_empty() {
        if out.json {
            out.json(&json!({
                "election": args.name,
                "fencing_token": token,
                "value": leadership.value(),
            }))?;
        } else {
            out.line(&token.to_string())?;
            output::progress(&format!(
                "leading {:?} (fencing token {token}); Ctrl-C to resign",
                args.name
            ));
        }
        hold_until_signal(leadership.lost(), interrupts).await
    } else {
        let env = vec![
            ("ANYKV_ELECTION_NAME".to_string(), args.name.clone()),
            ("ANYKV_ELECTION_TOKEN".to_string(), token.to_string()),
        ];
        run_command(
            &args.command,
            env,
            leadership.lost(),
            &what,
            interrupts,
            Some(args.grace),
        )
        .await
    };
    if !matches!(ended, Ended::Lost) {
        if let Err(e) = leadership.resign().await {
            output::progress(&format!("could not resign {what}: {e}"));
        }
    }
    finish(ended, &what)
}

/// `anykv services`.
pub async fn services(
    url: &str,
    args: ServicesArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    let store = open_store(url).await?;
    // `register` handles signals itself, so it can close its registry.
    let result = if matches!(args.action, ServicesAction::Register(_)) {
        services_on(store.clone(), args, out, interrupts).await
    } else {
        tokio::select! {
            r = services_on(store.clone(), args, out, interrupts) => r,
            signal = interrupts.first() => Err(CliError::interrupted(signal)),
        }
    };
    close_store(&store).await;
    result
}

async fn services_on(
    store: Arc<dyn Store>,
    args: ServicesArgs,
    out: Out,
    interrupts: &Interrupts,
) -> Result<(), CliError> {
    match args.action {
        ServicesAction::Register(r) => {
            let mut instance = Instance::new(r.service, r.id, r.address, r.port)
                .with_weight(r.weight)
                .with_enabled(!r.disabled);
            for (k, v) in r.meta {
                instance = instance.with_metadata(k, v);
            }
            let registry = Registry::new(store, RegistryOptions::new().with_ttl(r.ttl))?;
            let mut statuses = Box::pin(registry.statuses());
            let registered = tokio::select! {
                r = registry.register(instance) => r,
                signal = interrupts.first() => {
                    let _ = registry.close().await;
                    return Err(CliError::interrupted(signal));
                }
            };
            if let Err(e) = registered {
                let _ = registry.close().await;
                return Err(e.into());
            }
            let mut last: Option<RegistryStatus> = None;
            let signal = loop {
                tokio::select! {
                    status = statuses.next() => {
                        let Some(status) = status else { break None };
                        if last.as_ref() != Some(&status) {
                            print_status(&status, out)?;
                            last = Some(status);
                        }
                    }
                    signal = interrupts.first() => break Some(signal),
                }
            };
            let closed = registry.close().await;
            match signal {
                Some(signal) => Err(CliError::interrupted(signal)),
                None => closed.map_err(CliError::from),
            }
        }
        ServicesAction::List(l) => {
            let prefix = format!("{DEFAULT_SERVICES_PREFIX}/{}", l.service);
            let pairs = store.list(&prefix).await?;
            let instances: Vec<Instance> = pairs
                .iter()
                .filter_map(|p| Instance::from_json(&p.value).ok())
                .collect();
            if out.json {
                let items: Vec<Value> = instances.iter().map(instance_json).collect();
                return out.json(&Value::Array(items));
            }
            for i in &instances {
                out.line(&instance_line(i))?;
            }
            Ok(())
        }
        ServicesAction::Watch(w) => {
            let discovery = Discovery::open(store, &w.service, DiscoveryOptions::new()).await?;
            let mut changes = Box::pin(discovery.changes());
            let mut seen: BTreeMap<String, Instance> = BTreeMap::new();
            let mut synced = false;
            while changes.next().await.is_some() {
                let now: BTreeMap<String, Instance> = discovery
                    .all_instances()
                    .into_iter()
                    .map(|i| (i.id.clone(), i))
                    .collect();
                for (id, instance) in &now {
                    let event = match seen.get(id) {
                        None => "add",
                        Some(old) if old != instance => "update",
                        Some(_) => continue,
                    };
                    print_change(event, instance, out)?;
                }
                for (id, instance) in &seen {
                    if !now.contains_key(id) {
                        print_change("remove", instance, out)?;
                    }
                }
                seen = now;
                if !synced {
                    synced = true;
                    if out.json {
                        out.json(&json!({"event": "synced"}))?;
                    } else {
                        output::progress(&format!("watching service {:?}", w.service));
                    }
                }
            }
            Err(CliError::new(
                crate::exit::FAILURE,
                "Closed",
                "the watch ended: the store closed it",
            ))
        }
    }
}

fn state_name(state: &RegistryState) -> String {
    match state {
        RegistryState::Connecting => "connecting".into(),
        RegistryState::Registered => "registered".into(),
        RegistryState::Retrying { attempt, retry_in } => {
            format!(
                "retrying (attempt {attempt}, next in {})",
                show_duration(*retry_in)
            )
        }
        RegistryState::Closed => "closed".into(),
        _ => format!("{state:?}").to_lowercase(),
    }
}

fn print_status(status: &RegistryStatus, out: Out) -> Result<(), CliError> {
    let lease = status.lease.as_ref().map(|l| l.to_string());
    if out.json {
        return out.json(&json!({
            "state": state_name(&status.state),
            "lease": lease,
            "instances": status.instances,
            "generation": status.generation,
            "repairs": status.repairs,
            "last_error": status.last_error,
        }));
    }
    let mut line = state_name(&status.state);
    if let Some(lease) = lease {
        line.push_str(&format!("\tlease {lease}"));
    }
    if let Some(e) = &status.last_error {
        line.push_str(&format!("\t{}", output::one_line(e)));
    }
    out.line(&line)
}

fn print_change(event: &str, instance: &Instance, out: Out) -> Result<(), CliError> {
    if out.json {
        out.json(&json!({"event": event, "instance": instance_json(instance)}))
    } else if event == "remove" {
        out.line(&format!("REMOVE\t{}", instance.id))
    } else {
        out.line(&format!(
            "{}\t{}",
            event.to_uppercase(),
            instance_line(instance)
        ))
    }
}

/// An instance as JSON: `{"service", "id", "address", "port", "metadata",
/// "weight", "enabled"}`, as the registry stores it.
pub fn instance_json(instance: &Instance) -> Value {
    serde_json::to_value(instance).unwrap_or(Value::Null)
}

/// An instance as a text line: `ID<TAB>ADDRESS:PORT<TAB>weight=N<TAB>enabled|disabled`,
/// then one `<TAB>k=v` per metadata entry.
pub fn instance_line(instance: &Instance) -> String {
    let mut line = format!(
        "{}\t{}\tweight={}\t{}",
        instance.id,
        instance.endpoint(),
        instance.weight,
        if instance.enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    for (k, v) in &instance.metadata {
        line.push_str(&format!("\t{k}={}", output::display_value(v.as_bytes())));
    }
    line
}
