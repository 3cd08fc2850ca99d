//! Every file in deploy/ is checked by the tool that will read it, offline, on loopback:
//! the systemd unit with `systemd-analyze verify` and `security --offline`; the Prometheus
//! rules with `promtool check rules` and `promtool test rules`; the Kubernetes manifests
//! parsed (PyYAML, tests/peers/deploy_check.py) and checked against each other; the
//! Containerfile's structure; the Grafana dashboard's JSON, with each query checked by
//! promtool. The configuration each deployment ships (the systemd example, the ConfigMap with
//! the Deployment's args, the container's command) starts a real `ringrelay proxy`, and every
//! metric name deploy/ uses must be on that relay's live /metrics.
//! (deploy/haproxy/haproxy.cfg has its own test: tests/haproxy.rs.)

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Python with Debian's python3-yaml (the one scripts/install-test-deps.sh installs into).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn deploy(rel: &str) -> PathBuf {
    manifest_dir().join("deploy").join(rel)
}

fn read(rel: &str) -> String {
    let p = deploy(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> PeerOutput {
    require(program, "--version");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Peer::spawn_in(program, &args, cwd).finish(TOOL_TIMEOUT)
}

/// `Key=value` lines of a unit file, in order (a key may repeat).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "{key}= should appear once in the unit: {v:?}");
    v[0]
}

fn toml_int(doc: &toml::Value, key: &str) -> i64 {
    doc.get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("no integer {key} in the config example"))
}

/// Package name = the default binary (src/bin/ringrelay/), the one the files must name.
fn binary_name() -> String {
    let cargo: toml::Value = toml::from_str(
        &std::fs::read_to_string(manifest_dir().join("Cargo.toml")).expect("Cargo.toml"),
    )
    .expect("Cargo.toml parses");
    let name = cargo["package"]["name"].as_str().unwrap().to_string();
    assert!(manifest_dir().join("src/bin/ringrelay/main.rs").exists());
    let bins = cargo.get("bin").and_then(|b| b.as_array());
    for b in bins.into_iter().flatten() {
        assert_ne!(
            b["name"].as_str(),
            Some(name.as_str()),
            "a [[bin]] shadows the package binary"
        );
    }
    assert!(BIN.ends_with(&format!("/{name}")), "{BIN}");
    name
}

// ---------------------------------------------------------------------------------------------
// systemd

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = read("systemd/ringrelay.service");
    let exec = unit_value(&unit, "ExecStart");
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    assert_eq!(
        program,
        format!("/usr/local/bin/{}", binary_name()),
        "ExecStart"
    );
    // systemd-analyze verify needs the program to exist: the built binary stands in for it.
    let dir = TempDir::new("systemd");
    let copy = dir.write("ringrelay.service", unit.replace(program, BIN).as_bytes());
    let copy = copy.to_str().unwrap();
    let out = run("systemd-analyze", &["verify", "--man=no", copy], None);
    out.assert_success("systemd-analyze verify");
    // verify reports unknown keys and bad values as warnings with status 0.
    assert!(
        out.stderr.trim().is_empty() && out.stdout.trim().is_empty(),
        "systemd-analyze verify complained:\n{}{}",
        out.stdout,
        out.stderr
    );
    // The exposure level it prints is out of 10; --threshold counts tenths: at most 2.0.
    let out = run(
        "systemd-analyze",
        &["security", "--offline=true", "--threshold=20", copy],
        None,
    );
    out.assert_success("systemd-analyze security --offline=true --threshold=20");
    assert!(
        out.stdout.contains("Overall exposure level"),
        "{}",
        out.stdout
    );

    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("SystemCallErrorNumber", "EPERM"),
    ] {
        assert_eq!(unit_value(&unit, key), want, "{key}=");
    }
    let filters = unit_values(&unit, "SystemCallFilter");
    let allow = filters
        .iter()
        .find(|f| !f.starts_with('~'))
        .expect("allow list");
    for call in [
        "@system-service",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(
            allow.split_whitespace().any(|w| w == call),
            "{call} not allowed"
        );
    }
    let nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");

    // The config it reads is the example, and the stop timeout covers its drain.
    let config = words.collect::<Vec<_>>();
    assert_eq!(
        config,
        ["proxy", "--config", "/etc/ringrelay/ringrelay.toml"]
    );
    assert_eq!(unit_value(&unit, "ConfigurationDirectory"), "ringrelay");
    let example: toml::Value = toml::from_str(&read("systemd/ringrelay.toml")).unwrap();
    let stop: i64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    let (delay, drain) = (
        toml_int(&example, "drain_delay"),
        toml_int(&example, "drain_timeout"),
    );
    assert!(
        stop > delay + drain,
        "TimeoutStopSec={stop} must exceed drain_delay {delay} + drain_timeout {drain}"
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules

#[test]
fn prometheus_rules_check_and_pass_their_tests() {
    let dir = deploy("prometheus");
    let out = run(
        "promtool",
        &["check", "rules", "ringrelay-rules.yml"],
        Some(&dir),
    );
    out.assert_success("promtool check rules");
    assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
    let out = run(
        "promtool",
        &["test", "rules", "ringrelay-rules.test.yml"],
        Some(&dir),
    );
    out.assert_success("promtool test rules");
    assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
    // Every alert is exercised by the test file (firing, or proven quiet).
    let rules = read("prometheus/ringrelay-rules.yml");
    let tests = read("prometheus/ringrelay-rules.test.yml");
    let alerts = yaml_names(&rules, "- alert:");
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n"))
                || tests.contains(&format!("alertname: {a},")),
            "alert {a} is not in ringrelay-rules.test.yml"
        );
    }
}

/// The values of `- alert: NAME` or `- record: NAME` lines.
fn yaml_names(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| Some(l.trim().strip_prefix(key)?.trim().to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Grafana

#[test]
fn grafana_dashboard_parses_and_its_queries_are_promql() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/ringrelay.json")).expect("valid JSON");
    assert_eq!(dash["uid"], "ringrelay");
    assert!(dash["title"].is_string());
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 30);
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job", "instance"]);
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // promtool parses every query: each becomes a recording rule of a throwaway file, with
    // Grafana's variables replaced by what they stand for.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(!e.contains('$'), "a variable promtool cannot see: {e}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::Value::String(e)
        ));
    }
    let dir = TempDir::new("grafana");
    let file = dir.write("dashboard.rules.yml", rules.as_bytes());
    let out = run(
        "promtool",
        &["check", "rules", file.to_str().unwrap()],
        None,
    );
    out.assert_success("promtool check rules (the dashboard's queries)");
    assert!(
        out.stdout
            .contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{}",
        out.stdout
    );
}

/// Every PromQL expression of the dashboard (panel targets and template queries); asserts
/// the panels' structure on the way.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &p["gridPos"];
        assert!(grid["w"].as_u64().unwrap() <= 24 && grid["h"].as_u64().unwrap() > 0);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert!(!e.trim().is_empty(), "panel {id}");
            exprs.push(e.to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(m, _)| m.to_string())
                .expect("label_values(METRIC, LABEL)");
            exprs.push(inner);
        }
    }
    exprs
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Runs the checker; returns the ConfigMap's TOML (written to `dir`) and the container args.
fn kubernetes_checked(dir: &TempDir) -> (PathBuf, Vec<String>) {
    require(SYSTEM_PYTHON, "--version");
    let toml_out = dir.join("ringrelay.toml");
    let script = peers_dir().join("deploy_check.py");
    let out = Peer::spawn(
        SYSTEM_PYTHON,
        &[
            script.to_string_lossy().into_owned(),
            deploy("kubernetes").to_string_lossy().into_owned(),
            toml_out.to_string_lossy().into_owned(),
        ],
    )
    .finish(TOOL_TIMEOUT);
    out.assert_success("deploy_check.py");
    assert!(out.stdout.contains("ok 6 documents"), "{}", out.stdout);
    let args = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("args "))
        .expect("args line");
    let args: Vec<String> = serde_json::from_str(args).unwrap();
    (toml_out, args)
}

/// `args` with the value after `flag` replaced (the flag must be there).
fn with_value(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} not in {args:?}"));
    let mut a = args.to_vec();
    a[i + 1] = value.to_string();
    a
}

/// The manifests parse and agree; the Deployment's args with the ConfigMap's TOML start a
/// relay whose probes answer, and which closes a connection from outside the shipped
/// proxy_trusted networks (loopback is not among them) without a word.
#[test]
fn kubernetes_manifests_are_consistent_and_their_config_runs() {
    let dir = TempDir::new("k8s");
    let (config, args) = kubernetes_checked(&dir);
    let rec = Recorder::start(&[]);
    let mut a = with_value(&args, "--config", config.to_str().unwrap());
    a = with_value(&a, "--listen", "127.0.0.1:0");
    a = with_value(&a, "--metrics-listen", "127.0.0.1:0");
    a = with_value(&a, "--drain-delay", "1");
    let upstream = format!("127.0.0.1:{}", rec.port);
    a.extend(["--upstream".into(), upstream]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let relay = Server::start(&a);
    let admin = metrics_addr(&relay);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/readyz").0, 200);

    let mut s = std::net::TcpStream::connect(relay.addrs[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an untrusted client got {:?}", &buf[..n]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = http_get(admin, "/metrics");
        let v = sample(
            &m,
            "ringrelay_connections_rejected_total{reason=\"proxy_untrusted\"}",
        );
        if v >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "untrusted connection not counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay.stop().assert_success();
    assert!(rec.finish().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Container image

/// One instruction of a Containerfile: keyword and the rest, continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (k, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((k.to_ascii_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    assert!(cur.is_empty(), "the file ends inside a continued line");
    out
}

#[test]
fn containerfile_is_sane() {
    let name = binary_name();
    let text = read("container/Containerfile");
    let ins = instructions(&text);
    const KNOWN: [&str; 11] = [
        "FROM",
        "WORKDIR",
        "COPY",
        "RUN",
        "USER",
        "EXPOSE",
        "STOPSIGNAL",
        "ENTRYPOINT",
        "CMD",
        "ENV",
        "LABEL",
    ];
    let mut stages: Vec<String> = Vec::new();
    let mut froms = Vec::new();
    for (k, rest) in &ins {
        assert!(
            KNOWN.contains(&k.as_str()),
            "unexpected instruction {k} {rest}"
        );
        if k == "FROM" {
            let w: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                w.len() == 3 && w[1].eq_ignore_ascii_case("AS"),
                "FROM IMAGE AS NAME: {rest}"
            );
            stages.push(w[2].to_string());
            froms.push(w[0].to_string());
        }
    }
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].contains("rust:") && froms[0].contains("bookworm"));
    assert!(
        froms[1].contains("debian:bookworm-slim") || froms[1].contains("distroless"),
        "{}",
        froms[1]
    );
    // Instructions of the last (runtime) stage.
    let start = ins.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let runtime = &ins[start..];
    let get = |key: &str| -> Vec<&String> {
        runtime
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r)
            .collect()
    };

    // The builder builds the package binary; every plain COPY source is in the repository.
    let build = ins
        .iter()
        .find(|(k, r)| k == "RUN" && r.contains("cargo build"))
        .expect("a cargo build");
    assert!(build.1.contains(&format!("--bin {name}")), "{}", build.1);
    assert!(build.1.contains("--release") && build.1.contains("--locked"));
    for (k, rest) in &ins {
        if k != "COPY" {
            continue;
        }
        let w: Vec<&str> = rest.split_whitespace().collect();
        if let Some(stage) = w[0].strip_prefix("--from=") {
            assert!(stages.contains(&stage.to_string()), "COPY from {stage}");
        } else {
            for src in &w[..w.len() - 1] {
                assert!(manifest_dir().join(src).exists(), "COPY source {src}");
            }
        }
    }
    let copies = get("COPY");
    assert_eq!(copies.len(), 1, "{copies:?}");
    let binary = format!("/usr/local/bin/{name}");
    assert_eq!(
        copies[0],
        &format!("--from={} {binary} {binary}", stages[0])
    );

    let user = get("USER");
    assert_eq!(user.len(), 1);
    let uid = user[0].split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER must be a numeric non-root uid: {}",
        user[0]
    );
    let mut ports: Vec<&str> = get("EXPOSE")
        .iter()
        .flat_map(|r| r.split_whitespace())
        .collect();
    ports.sort();
    assert_eq!(ports, ["2525", "9465"]);

    let json = |key: &str| -> Vec<String> {
        let v = get(key);
        assert_eq!(v.len(), 1, "{key}");
        serde_json::from_str(v[0]).unwrap_or_else(|e| panic!("{key} is not exec form: {e}"))
    };
    assert_eq!(json("ENTRYPOINT"), [binary]);
    assert_eq!(
        json("CMD"),
        ["proxy", "--config", "/etc/ringrelay/ringrelay.toml"]
    );
    assert!(text.contains("io_uring"), "the io_uring note");

    // The build context leaves target/ and .git out.
    let ignore = std::fs::read_to_string(manifest_dir().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    for must in ["target", ".git"] {
        assert!(ignored.contains(&must), "{must} not in .dockerignore");
    }
    for need in ["src", "bench", "examples", "Cargo.toml", "Cargo.lock"] {
        assert!(!ignored.contains(&need), "{need} is needed by the build");
    }
}

// ---------------------------------------------------------------------------------------------
// Metric names against a live relay

/// Metric names in `text`: tokens made of `[A-Za-z0-9_:]` that start with one of `prefixes`
/// and have no `:` (those are recorded series, checked separately).
fn metric_names(text: &str, prefixes: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    for tok in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if tok.matches(':').count() == 2
            && (tok.starts_with("instance:") || tok.starts_with("job:"))
        {
            recorded.insert(tok.to_string());
        } else if !tok.contains(':')
            && prefixes
                .iter()
                .any(|p| tok.starts_with(p) && tok.len() > p.len())
        {
            names.insert(tok.to_string());
        }
    }
    (names, recorded)
}

/// Every file under deploy/, as text.
fn deploy_files() -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&manifest_dir().join("deploy"), &mut out);
    out
}

/// The `# TYPE name kind` lines of an exposition.
fn exposed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Starts `ringrelay proxy` as the systemd unit does (ExecStart's arguments, the example
/// config), moved to loopback, relays one message through it, and checks every `ringrelay_*`
/// and `process_*` name in deploy/ against its /metrics; every recorded series the dashboard
/// or the alerts use is one the rules record.
#[test]
fn every_metric_name_in_deploy_is_on_a_live_metrics_page() {
    let rec = Recorder::start(&[]);
    let config = deploy("systemd/ringrelay.toml");
    let upstream = format!("127.0.0.1:{}", rec.port);
    let relay = Server::start(&[
        "proxy",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--shards",
        "1",
        "--drain-delay",
        "0",
        "--hostname",
        RELAY_HOST,
    ]);
    let mut c = Client::connect(relay.port());
    c.ehlo("deploy.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("deploy"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    let (status, page) = http_get(metrics_addr(&relay), "/metrics");
    assert_eq!(status, 200);
    let types = exposed(&page);
    assert!(
        sample(
            &page,
            "ringrelay_upstream_end_of_data_duration_seconds_count"
        ) >= 1.0,
        "the message's end of data was not observed"
    );

    let mut used = BTreeMap::<String, Vec<PathBuf>>::new();
    let mut recorded_used = BTreeSet::new();
    for (path, text) in deploy_files() {
        let (names, recorded) = metric_names(&text, &["ringrelay_", "process_"]);
        for n in names {
            used.entry(n).or_default().push(path.clone());
        }
        recorded_used.extend(recorded);
    }
    let mut missing = Vec::new();
    for (name, files) in &used {
        let ok = types.contains_key(name)
            || [("_bucket", "histogram"), ("_sum", ""), ("_count", "")]
                .iter()
                .any(|(suffix, kind)| {
                    name.strip_suffix(suffix).is_some_and(|base| {
                        types.get(base).is_some_and(|k| {
                            k == "histogram" || (kind.is_empty() && k == "summary")
                        })
                    })
                });
        if !ok {
            missing.push(format!("{name} (in {files:?})"));
        }
    }
    assert!(
        missing.is_empty(),
        "names in deploy/ that /metrics does not have:\n{}",
        missing.join("\n")
    );
    // The check covers what the rules and the dashboard are about.
    for must in [
        "ringrelay_replies_total",
        "ringrelay_refusals_total",
        "ringrelay_upstream_connect_failures_total",
        "ringrelay_upstream_pool_exhausted_total",
        "ringrelay_upstream_end_of_data_duration_seconds_bucket",
        "ringrelay_draining",
        "ringrelay_log_lines_dropped_total",
    ] {
        assert!(used.contains_key(must), "deploy/ does not use {must}");
    }
    assert!(
        used.len() >= 25,
        "only {} names found: {used:?}",
        used.len()
    );

    let rules = read("prometheus/ringrelay-rules.yml");
    let records: BTreeSet<String> = yaml_names(&rules, "- record:").into_iter().collect();
    assert!(!records.is_empty());
    for r in &recorded_used {
        assert!(records.contains(r), "{r} is used but no rule records it");
    }

    relay.stop().assert_success();
    assert_eq!(rec.finish().len(), 1);
}

/// The container's command with the ConfigMap's TOML mounted where it reads it.
#[test]
fn container_command_runs_with_the_configmap() {
    let dir = TempDir::new("container");
    let (config, _) = kubernetes_checked(&dir);
    let cmd = instructions(&read("container/Containerfile"))
        .into_iter()
        .rfind(|(k, _)| k == "CMD")
        .map(|(_, r)| serde_json::from_str::<Vec<String>>(&r).unwrap())
        .unwrap();
    let mut a = with_value(&cmd, "--config", config.to_str().unwrap());
    a.extend(
        [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
        ]
        .map(String::from),
    );
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let relay = Server::start(&a);
    assert_eq!(http_get(metrics_addr(&relay), "/healthz").0, 200);
    relay.stop().assert_success();
}
