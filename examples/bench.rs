//! The benchmark's own tools, built by `scripts/bench` (`cargo build --release --example bench`).
//!
//! - `baseline <dir> <addr>`: a bare axum server answering, from memory and with no
//!   middleware, the very bytes enc answered for the benchmark's requests (saved in `<dir>`
//!   by `scripts/bench`): what enc is measured against.
//! - `rate <url> <requests/s> <seconds> <connections> [header]`: a constant-rate load, each
//!   request timed from when it was due (so a stall counts against every request it delays);
//!   prints the rate reached and latency percentiles.
//! - `latency <url> <n> [header]`: the mean and median latency of `n` requests one after
//!   another over one kept-alive connection.
//! - `getitem <endpoint> <table> <hash name> <hash value> [<range name> <range value>] <n>`:
//!   the mean latency of one raw DynamoDB `GetItem`, for comparison with enc's classification.
//! - `transactget <endpoint> <n> (<table> <key name> <key value>)...`: the mean latency of one
//!   raw `TransactGetItems` of those items: the very store call enc makes for a
//!   classification, without enc.
//! - `fleet <url> <header> <first> <count> <connections> <facts.json> <bytes>`: agent runs of
//!   nodes `n<first>`.. (`n000000` form) posting facts: the facts in `<facts.json>` (`facter
//!   -j` of this host) with each node's own values at the paths the fleet's rules read, padded
//!   with custom facts to about `<bytes>` as JSON; prints the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Fixtures = Arc<Mutex<HashMap<String, (&'static str, Bytes)>>>;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The baseline serves as axum does by default; the clients run on one thread, so that
    // they leave the other core to the server.
    let runtime = match args.first().map(String::as_str) {
        Some("baseline") => tokio::runtime::Runtime::new()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    match args.first().map(String::as_str) {
        Some("baseline") if args.len() == 3 => runtime.block_on(baseline(&args[1], &args[2])),
        Some("rate") if args.len() >= 5 => runtime.block_on(rate(&args[1..])),
        Some("getitem") if args.len() >= 6 => runtime.block_on(getitem(&args[1..])),
        Some("transactget") if args.len() >= 5 => runtime.block_on(transactget(&args[1..])),
        Some("latency") if args.len() >= 3 => runtime.block_on(latency(&args[1..])),
        Some("fleet") if args.len() == 8 => runtime.block_on(fleet(&args[1..])),
        _ => anyhow::bail!("usage: see the top of examples/bench.rs"),
    }
}

/// Serves `<dir>/node.json`, `classification.yaml` and `list.json` at the paths enc serves
/// them, and keeps what is posted to `/nodes/` in memory, as a store would.
async fn baseline(dir: &str, addr: &str) -> anyhow::Result<()> {
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).map(Bytes::from);
    let mut fixtures = HashMap::new();
    fixtures.insert("node".to_owned(), ("application/json", read("node.json")?));
    fixtures.insert(
        "classification".to_owned(),
        ("application/yaml", read("classification.yaml")?),
    );
    fixtures.insert("list".to_owned(), ("application/json", read("list.json")?));
    let fixtures: Fixtures = Arc::new(Mutex::new(fixtures));
    let app = Router::new()
        .route("/nodes/{name}", get(node))
        .route("/nodes/{name}/classification", get(classification))
        .route("/nodes", get(list))
        .route("/nodes/", axum::routing::post(create))
        .with_state(fixtures);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn answer(fixtures: &Fixtures, what: &str) -> impl IntoResponse + use<> {
    let (kind, body) = fixtures.lock().expect("fixtures")[what].clone();
    ([(header::CONTENT_TYPE, kind)], body)
}

async fn node(State(f): State<Fixtures>, Path(_): Path<String>) -> impl IntoResponse {
    answer(&f, "node")
}

async fn classification(State(f): State<Fixtures>, Path(_): Path<String>) -> impl IntoResponse {
    answer(&f, "classification")
}

async fn list(State(f): State<Fixtures>) -> impl IntoResponse {
    answer(&f, "list")
}

async fn create(State(f): State<Fixtures>, body: Bytes) -> impl IntoResponse {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let name = value["unique_name"].as_str().unwrap_or_default().to_owned();
    f.lock()
        .expect("fixtures")
        .insert(name, ("application/json", body.clone()));
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Sends `rate` requests a second for `seconds` over `connections` connections, as wrk2
/// does: a pacing thread (the runtime's timers tick in whole milliseconds; a thread's sleep
/// is finer) hands request `i` to connection `i % connections` when it is due; a connection
/// still busy with the one before queues it, and each request is timed from when it was due.
async fn rate(args: &[String]) -> anyhow::Result<()> {
    let url: hyper::Uri = args[0].parse()?;
    let per_second: f64 = args[1].parse()?;
    let seconds: f64 = args[2].parse()?;
    let connections: usize = args[3].parse()?;
    let extra = args.get(4).and_then(|h| h.split_once(": "));
    let extra = extra.map(|(k, v)| (k.to_owned(), v.to_owned()));
    let authority = url.authority().expect("a URL with a host").clone();
    let target = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let total = (per_second * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let connections = connections.clamp(1, total.max(1));
    let mut queues = Vec::with_capacity(connections);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (queue, mut due) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        queues.push(queue);
        let (authority, target, extra) = (authority.clone(), target.clone(), extra.clone());
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        tasks.push(tokio::spawn(async move {
            let mut timed = Vec::with_capacity(total / connections + 1);
            while let Some(due) = due.recv().await {
                let mut request =
                    hyper::Request::get(target.as_str()).header(header::HOST, authority.as_str());
                if let Some((k, v)) = &extra {
                    request = request.header(k, v);
                }
                let ok = match sender
                    .send_request(request.body(Empty::<Bytes>::new())?)
                    .await
                {
                    Ok(r) => {
                        let status = r.status();
                        r.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                timed.push((due.elapsed(), ok));
            }
            anyhow::Ok(timed)
        }));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = queues[i % connections].send(due);
        }
    });
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0usize;
    for task in tasks {
        for (latency, ok) in task.await?? {
            latencies.push(latency);
            failed += usize::from(!ok);
        }
    }
    pacer.join().expect("the pacing thread");
    let took = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{total} requests at {per_second:.0}/s asked, {:.0}/s done, {failed} failed; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        total as f64 / took,
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(*latencies.last().expect("a request"))
    );
    Ok(())
}

/// The mean latency of `n` GETs in a row over one connection, after one to open it.
async fn latency(args: &[String]) -> anyhow::Result<()> {
    let url: hyper::Uri = args[0].parse()?;
    let n: u32 = args[1].parse()?;
    let header = args.get(2).and_then(|h| h.split_once(": "));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = || {
        let mut request = hyper::Request::get(url.clone());
        if let Some((k, v)) = header {
            request = request.header(k, v);
        }
        client.request(request.body(Empty::new()).expect("request"))
    };
    get().await?.into_body().collect().await?;
    let started = Instant::now();
    let mut each = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let one = Instant::now();
        let response = get().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url} answered {}",
            response.status()
        );
        response.into_body().collect().await?;
        each.push(one.elapsed());
    }
    let mean = started.elapsed() / n;
    println!(
        "GET {url}: mean {:.3} ms, p50 {:.3} ms over {n}",
        mean.as_secs_f64() * 1000.0,
        median(&mut each).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The middle of `times`: unlike their mean, not moved by a JVM's pauses.
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// The mean latency of `n` consistent `GetItem` calls for one item.
async fn getitem(args: &[String]) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (endpoint, table) = (&args[0], &args[1]);
    let n: u32 = args.last().expect("n").parse()?;
    let keys = &args[2..args.len() - 1];
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let get = || {
        let mut call = client.get_item().table_name(table).consistent_read(true);
        for pair in keys.chunks(2) {
            call = call.key(&pair[0], AttributeValue::S(pair[1].clone()));
        }
        call.send()
    };
    get().await?; // a connection, and the JVM warmed
    let started = Instant::now();
    let mut each = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let one = Instant::now();
        let item = get().await?;
        anyhow::ensure!(item.item.is_some(), "no such item in {table}");
        each.push(one.elapsed());
    }
    let mean = started.elapsed() / n;
    println!(
        "GetItem {table}: mean {:.3} ms, p50 {:.3} ms over {n}",
        mean.as_secs_f64() * 1000.0,
        median(&mut each).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The mean latency of `n` `TransactGetItems` calls for the items named by the triples.
async fn transactget(args: &[String]) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{AttributeValue, Get, TransactGetItem};
    let endpoint = &args[0];
    let n: u32 = args[1].parse()?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let mut items = Vec::new();
    for triple in args[2..].chunks(3) {
        anyhow::ensure!(
            triple.len() == 3,
            "items are <table> <key name> <key value>"
        );
        let get = Get::builder()
            .table_name(&triple[0])
            .key(&triple[1], AttributeValue::S(triple[2].clone()))
            .build()?;
        items.push(TransactGetItem::builder().get(get).build());
    }
    let get = || {
        client
            .transact_get_items()
            .set_transact_items(Some(items.clone()))
            .send()
    };
    get().await?;
    let started = Instant::now();
    let mut each = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let one = Instant::now();
        let found = get().await?;
        anyhow::ensure!(
            found.responses().iter().all(|r| r.item.is_some()),
            "an item is missing"
        );
        each.push(one.elapsed());
    }
    let mean = started.elapsed() / n;
    println!(
        "TransactGetItems of {} items: mean {:.3} ms, p50 {:.3} ms over {n}",
        items.len(),
        mean.as_secs_f64() * 1000.0,
        median(&mut each).as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The facts of node `n` of the fleet: `template` with the node's values at the ten paths
/// the benchmark's rules read, and custom facts up to about `bytes` of JSON.
fn node_facts(template: &serde_json::Value, n: usize, bytes: usize) -> serde_json::Value {
    use serde_json::json;
    let mut facts = template.clone();
    let set = |facts: &mut serde_json::Value, path: &[&str], value: serde_json::Value| {
        let mut at = facts;
        for key in &path[..path.len() - 1] {
            if !at.get(*key).is_some_and(serde_json::Value::is_object) {
                at[*key] = json!({});
            }
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
    };
    set(&mut facts, &["os", "family"], json!("Debian"));
    set(
        &mut facts,
        &["os", "release", "major"],
        json!(if n.is_multiple_of(2) { "12" } else { "11" }),
    );
    set(&mut facts, &["processors", "count"], json!(2 + n % 8));
    set(
        &mut facts,
        &["memory", "system", "total_bytes"],
        json!((2 + n % 4) << 30),
    );
    set(
        &mut facts,
        &["networking", "domain"],
        json!(format!("d{}.example.com", n % 5)),
    );
    set(
        &mut facts,
        &["virtual"],
        json!(["kvm", "physical", "xen"][n % 3]),
    );
    set(
        &mut facts,
        &["kernelrelease"],
        json!(format!("6.1.0-{}-amd64", 20 + n % 6)),
    );
    set(&mut facts, &["role"], json!(format!("r{}", n % 20)));
    set(
        &mut facts,
        &["datacenter"],
        json!(format!("dc{}", (n / 20) % 10)),
    );
    set(&mut facts, &["team"], json!(format!("t{}", n % 7)));
    set(&mut facts, &["uptime_seconds"], json!(1000 + n));
    let size = serde_json::to_vec(&facts).map_or(0, |b| b.len());
    let mut custom = serde_json::Map::new();
    let mut grown = size;
    let mut i = 0;
    while grown + 60 < bytes {
        let value = format!("{n}-{i}-{}", "v".repeat(40));
        grown += value.len() + 20;
        custom.insert(format!("custom_fact_{i:04}"), json!(value));
        i += 1;
    }
    facts["custom"] = serde_json::Value::Object(custom);
    facts
}

/// Agent runs of `count` nodes from `first`, over `connections` connections at once.
async fn fleet(args: &[String]) -> anyhow::Result<()> {
    let url: hyper::Uri = args[0].parse()?;
    let (name, value) = args[1]
        .split_once(": ")
        .ok_or_else(|| anyhow::anyhow!("a header is `Name: value`"))?;
    let (name, value) = (name.to_owned(), value.to_owned());
    let first: usize = args[2].parse()?;
    let count: usize = args[3].parse()?;
    let connections: usize = args[4].parse::<usize>()?.clamp(1, count.max(1));
    let template: serde_json::Value = serde_json::from_slice(&std::fs::read(&args[5])?)?;
    let bytes: usize = args[6].parse()?;
    let authority = url.authority().expect("a URL with a host").clone();
    let template = Arc::new(template);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (authority, template) = (authority.clone(), template.clone());
        let (name, value) = (name.clone(), value.clone());
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            for n in (first + c..first + count).step_by(connections) {
                let body = serde_json::json!({ "facts": node_facts(&template, n, bytes) });
                let request = hyper::Request::post(format!("/nodes/n{n:06}/classification"))
                    .header(header::HOST, authority.as_str())
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(name.as_str(), value.as_str())
                    .body(http_body_util::Full::new(Bytes::from(serde_json::to_vec(
                        &body,
                    )?)))?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                anyhow::ensure!(
                    status.is_success(),
                    "n{n:06} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await??;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{sent} agent runs with facts in {took:.1} s ({:.0}/s)",
        sent as f64 / took
    );
    Ok(())
}
