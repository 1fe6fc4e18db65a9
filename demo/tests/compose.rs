//! docker-compose.yml, the Dockerfile and the Kubernetes sidecar manifest agree with the code: every
//! `SQLCOMMENTER_*` variable is one the proxy reads (clap introspection of `ProxyArgs`) and its values
//! resolve to a valid proxy configuration; ports line up between services; the PostgreSQL `-c` flags are
//! the demo's correlation settings; the commands parse with the real argument definitions; the Dockerfile
//! builds the binary and examples that exist. No container engine runs here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};
use serde::Deserialize as _;
use serde_yaml::Value;
use sqlcommenter_proxy::{ProxyArgs, Upstream};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).unwrap()
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"].get(name).unwrap_or_else(|| panic!("service {name} missing"))
}

fn env(svc: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match &svc["environment"] {
        Value::Mapping(m) => {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("env value {other:?}"),
                };
                out.insert(k.as_str().unwrap().to_owned(), v);
            }
        }
        Value::Sequence(s) => {
            for item in s {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                out.insert(k.to_owned(), v.to_owned());
            }
        }
        Value::Null => {}
        other => panic!("environment {other:?}"),
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// Container-side ports a service publishes ("HOST:CONTAINER").
fn container_ports(svc: &Value) -> Vec<u16> {
    strings(&svc["ports"]).iter().map(|p| p.rsplit(':').next().unwrap().parse().unwrap()).collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// (long flag, env name) of every `ProxyArgs` argument.
fn proxy_env_flags() -> Vec<(String, String)> {
    let cmd = ProxyArgs::augment_args(Command::new("proxy"));
    cmd.get_arguments().filter_map(|a| Some((a.get_long()?.to_owned(), a.get_env()?.to_str()?.to_owned()))).collect()
}

/// Resolves a proxy configuration from `SQLCOMMENTER_*` variables the way the binary does: each variable
/// becomes its flag (same values, same parser).
fn resolve_proxy(vars: &BTreeMap<String, String>) -> sqlcommenter_proxy::ProxyConfig {
    let flags = proxy_env_flags();
    let mut argv = vec!["proxy".to_owned()];
    for (name, value) in vars.iter().filter(|(k, _)| k.starts_with("SQLCOMMENTER_")) {
        let (long, _) = flags
            .iter()
            .find(|(_, e)| e == name)
            .unwrap_or_else(|| panic!("{name} is not an environment variable of `sqlcommenter proxy`"));
        argv.push(format!("--{long}={value}"));
    }
    let cmd = ProxyArgs::augment_args(Command::new("proxy"));
    let matches = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let args = ProxyArgs::from_arg_matches(&matches).unwrap();
    args.resolve().unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn parse_with<A: Args + FromArgMatches>(argv: &[String]) -> A {
    let cmd = A::augment_args(Command::new("sqlcommenter"));
    let m = cmd.try_get_matches_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    A::from_arg_matches(&m).unwrap()
}

#[test]
fn proxy_service_matches_proxy_args() {
    let c = compose();
    let proxy = service(&c, "proxy");
    assert_eq!(strings(&proxy["command"]), ["proxy"]);
    assert!(read("cli/src/main.rs").contains("Proxy(sqlcommenter_proxy::ProxyArgs)"), "cli has a proxy subcommand");
    let vars = env(proxy);
    assert!(vars.keys().any(|k| k.starts_with("SQLCOMMENTER_")));
    let config = resolve_proxy(&vars);
    // The published port is the one the proxy listens on, and the Dockerfile exposes it.
    assert_eq!(container_ports(proxy), [config.listen.port()]);
    assert!(read("Dockerfile").lines().any(|l| l.trim() == format!("EXPOSE {}", config.listen.port())));
    assert!(config.listen.ip().is_unspecified(), "inside a container the proxy must listen on all interfaces");
    // The upstream is the postgres service, on the port PostgreSQL listens on.
    assert_eq!(config.upstream, Upstream { host: "postgres".into(), port: 5432 });
    assert_eq!(container_ports(service(&c, "postgres")), [5432]);
}

#[test]
fn sidecar_manifest_matches_proxy_args() {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&read("deploy/kubernetes/proxy-sidecar.yaml"))
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let containers = &docs[0]["spec"]["template"]["spec"]["containers"];
    let proxy = containers.as_sequence().unwrap().iter().find(|c| c["name"] == "sqlcommenter-proxy").unwrap();
    assert_eq!(strings(&proxy["args"]), ["proxy"]);
    let vars: BTreeMap<String, String> = proxy["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap().to_owned()))
        .collect();
    let config = resolve_proxy(&vars);
    let port = proxy["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(u64::from(config.listen.port()), port);
    assert_eq!(proxy["readinessProbe"]["tcpSocket"]["port"].as_u64(), Some(port));
    // The application container connects to the sidecar's port.
    let app = containers.as_sequence().unwrap().iter().find(|c| c["name"] == "app").unwrap();
    let url = app["env"][0]["value"].as_str().unwrap();
    assert_eq!(Upstream::parse(url).unwrap(), Upstream { host: "127.0.0.1".into(), port: port as u16 });
}

#[test]
fn postgres_flags_are_the_demo_correlation_settings() {
    let c = compose();
    let cmd = strings(&service(&c, "postgres")["command"]);
    assert_eq!(cmd[0], "postgres");
    let mut flags = BTreeMap::new();
    let mut it = cmd[1..].iter();
    while let Some(flag) = it.next() {
        assert_eq!(flag, "-c", "{cmd:?}");
        let (k, v) = it.next().unwrap().split_once('=').unwrap();
        flags.insert(k.to_owned(), v.to_owned());
    }
    for (name, value) in sqlcommenter_demo::server_settings(Duration::from_millis(300)) {
        assert_eq!(flags.get(name), Some(&value), "-c {name}");
    }
    assert!(flags["log_line_prefix"].contains("%a"));
    assert_eq!(flags["logging_collector"], "on");
    assert!(flags["log_destination"].split(',').any(|d| d == "jsonlog"));
    let preload: Vec<&str> = flags["shared_preload_libraries"].split(',').collect();
    for lib in sqlcommenter_demo::PRELOAD_LIBRARIES {
        assert!(preload.contains(&lib), "{lib} preloaded");
    }
    // The docs recommend the same prefix.
    assert!(read("docs/postgresql-setup.md").contains(&format!("log_line_prefix = '{}'", flags["log_line_prefix"])));

    // The log follower reads the file PostgreSQL writes (jsonlog: log_filename + ".json") from the shared volume.
    let logs = service(&c, "logs");
    let mut argv = vec!["logs".to_owned()];
    argv.extend(strings(&logs["command"]).into_iter().skip(1));
    assert_eq!(strings(&logs["command"])[0], "logs");
    let args: sqlcommenter_logs::LogsArgs = parse_with(&argv);
    let expected = Path::new(&flags["log_directory"]).join(format!("{}.json", flags["log_filename"]));
    assert_eq!(args.files, std::slice::from_ref(&expected));
    assert!(args.otlp && args.follow);
    let mount = |svc: &Value| -> Vec<(String, String)> {
        strings(&svc["volumes"])
            .iter()
            .map(|v| {
                let mut p = v.split(':');
                (p.next().unwrap().to_owned(), p.next().unwrap().to_owned())
            })
            .collect()
    };
    let pg_vol = mount(service(&c, "postgres"));
    let logs_vol = mount(logs);
    assert!(pg_vol.iter().any(|(vol, dir)| dir == &flags["log_directory"]
        && logs_vol.iter().any(|(v2, d2)| v2 == vol && expected.starts_with(d2))));
}

#[test]
fn jaeger_receives_otlp_from_every_exporter() {
    let c = compose();
    let jaeger = service(&c, "jaeger");
    let ports = container_ports(jaeger);
    for p in [16686, 4317, 4318] {
        assert!(ports.contains(&p), "jaeger publishes {p}");
    }
    assert_eq!(env(jaeger)["COLLECTOR_OTLP_ENABLED"], "true");
    for name in ["app", "logs", "demo"] {
        let endpoint = env(service(&c, name))["OTEL_EXPORTER_OTLP_ENDPOINT"].clone();
        // Every exporter in this project speaks OTLP over HTTP/protobuf: port 4318.
        assert_eq!(endpoint, "http://jaeger:4318", "{name}");
    }
}

#[test]
fn applications_connect_where_the_services_listen() {
    let c = compose();
    let proxy_port = resolve_proxy(&env(service(&c, "proxy"))).listen.port();
    let app = service(&c, "app");
    let vars = env(app);
    assert_eq!(Upstream::parse(&vars["DATABASE_URL"]).unwrap(), Upstream { host: "postgres".into(), port: 5432 });
    assert_eq!(container_ports(app), [port_of(&vars["LISTEN"])]);
    let legacy = env(service(&c, "legacy"));
    assert_eq!(Upstream::parse(&legacy["DATABASE_URL"]).unwrap(), Upstream { host: "proxy".into(), port: proxy_port });
    let demo = service(&c, "demo");
    let vars = env(demo);
    assert!(vars.contains_key(sqlcommenter_testpg::SCRATCH_ENV));
    let cmd = strings(&demo["command"]);
    assert_eq!(cmd[0], "demo");
    let args: sqlcommenter_demo::DemoArgs = parse_with(&cmd);
    assert!(args.report.starts_with("/work"), "report in the image's writable WORKDIR");
}

#[test]
fn dockerfile_builds_what_compose_runs() {
    let docker = read("Dockerfile");
    let c = compose();
    // Every project service is built from this Dockerfile.
    for name in ["proxy", "app", "legacy", "logs", "demo"] {
        let svc = service(&c, name);
        assert_eq!(svc["build"].as_str(), Some("."), "{name} builds the root Dockerfile");
        assert_eq!(svc["image"].as_str(), Some("sqlcommenter:local"));
    }
    assert_eq!(docker.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    // The binary: package and bin name as in cli/Cargo.toml.
    let cli = read("cli/Cargo.toml");
    assert!(cli.contains("name = \"sqlcommenter-cli\"") && cli.contains("[[bin]]\nname = \"sqlcommenter\""));
    assert!(docker.contains("-p sqlcommenter-cli --bin sqlcommenter"));
    assert!(docker.contains("target/release/sqlcommenter /out/sqlcommenter"));
    assert!(docker.contains("ENTRYPOINT [\"sqlcommenter\"]"));
    // The examples exist, and the entrypoints compose uses are what the Dockerfile installs.
    for (example, installed) in
        [("axum_app", "sqlcommenter-axum-app"), ("unmodified_app", "sqlcommenter-unmodified-app")]
    {
        assert!(root().join("demo/examples").join(format!("{example}.rs")).exists());
        assert!(docker.contains(&format!("--example {example}")));
        assert!(docker.contains(&format!("target/release/examples/{example} /out/{installed}")));
    }
    assert_eq!(strings(&service(&c, "app")["entrypoint"]), ["sqlcommenter-axum-app"]);
    assert_eq!(strings(&service(&c, "legacy")["entrypoint"]), ["sqlcommenter-unmodified-app"]);
    // The demo needs PostgreSQL server binaries, found through the harness's variable.
    let bindir = docker
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ENV {}=", sqlcommenter_testpg::PG_BINDIR_ENV)))
        .expect("ENV PG_BINDIR");
    let major = bindir.trim_start_matches("/usr/lib/postgresql/").split('/').next().unwrap();
    assert!(docker.contains(&format!("postgresql-{major}")), "installs the server of {bindir}");
    // Non-root, numeric user (Kubernetes runAsNonRoot).
    let user = docker.lines().find_map(|l| l.strip_prefix("USER ")).unwrap();
    assert!(user.trim().parse::<u32>().unwrap() > 0);
}
