//! `tollgate agent`: meter this node's traffic into the configured sinks
//! until SIGTERM.

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use tollgate::agent::holder::{self, Held, Holder};
use tollgate::agent::http::{self, Health};
use tollgate::agent::metrics::Metrics;
use tollgate::agent::talkers::TopTalkers;
use tollgate::agent::workloads::{WorkloadCollector, WorkloadSeries};
use tollgate::agent::{ended, handover, Batcher, EventListener, Metering, PerWorkload, Reader};
use tollgate::config::{self, Config};
use tollgate::conntrack::sysctl::{self, Outcome};
use tollgate::conntrack::{EndedConnections, TableReader};
use tollgate::enrich::Enricher;
use tollgate::input;
use tollgate::sink::batch::TokenMaker;
use tollgate::sink::clickhouse::{self, ClickHouseSink, ConnectionError};
use tollgate::sink::deliver::{self, DeliveryCounts, RetryPolicy};
use tollgate::sink::parquet::ParquetSink;
use tollgate::sink::spool::{self, Spool};
use tollgate::sink::{self, Configured, Sink};

use super::BadInput;

/// Reads this node's conntrack table every interval (a zeroing dump plus
/// the connections that ended in between), enriches and classifies each
/// connection, and delivers the records to ClickHouse, Parquet files or
/// both through a durable spool. SIGTERM or SIGINT: one last read, then
/// delivery until `agent.shutdown_timeout_seconds`; what is left stays in
/// the spool for the next start.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The configuration file (YAML; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    // Everything the configuration names is checked before the kernel
    // settings change: a mistake found later would leave them changed for
    // an agent that never runs.
    let (config, base) = Config::load(&args.config).map_err(|e| BadInput(e.to_string()))?;
    let bad = |message: String| BadInput(format!("config {}: {message}", args.config.display()));
    let node = config
        .node
        .clone()
        .ok_or_else(|| bad("node: give this node's name (or set TOLLGATE_NODE)".into()))?;
    let sinks = &config.sinks;
    if sinks.clickhouse.is_none() && sinks.parquet.is_none() {
        return Err(bad("sinks: configure clickhouse, parquet, or both".into()).into());
    }
    let connection = sinks
        .clickhouse
        .as_ref()
        .map(|c| c.connection(&base))
        .transpose()
        .map_err(|e| bad(format!("sinks.clickhouse.{e}")))?;
    let spool_dir = base.join(&sinks.spool.dir);
    input::writable_dir("sinks.spool.dir", &spool_dir)?;
    let parquet_dir = sinks.parquet.as_ref().map(|p| base.join(&p.dir));
    if let Some(dir) = &parquet_dir {
        input::writable_dir("sinks.parquet.dir", dir)?;
        input::separate_dirs(("sinks.spool.dir", &spool_dir), ("sinks.parquet.dir", dir))?;
    }
    let prepared = config::prepare(&config, &base).map_err(|e| BadInput(e.to_string()))?;
    if prepared.lists_node(&node) == Some(false) {
        return Err(bad(format!(
            "node: {node:?} is not among the inventory file's nodes: this agent would find no local endpoint"
        ))
        .into());
    }
    let metrics = Metrics::new();
    let (mut holder, mut held) = connect_holder(config.agent.holder_socket.as_deref(), &base);
    let (listen, early) = match std::net::TcpListener::bind(config.agent.listen) {
        // The port and the spool both taken: the agent this one replaces
        // (an overlapping restart, a DaemonSet update with surge) is
        // running or finishing its last read. Subscribe now, so that no
        // connection ends unseen between its last event and this agent's
        // first, and wait for it to let go; then meter from where it
        // stopped.
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse && spool::held_elsewhere(&spool_dir) =>
        {
            tracing::warn!(
                spool = %spool_dir.display(),
                listen = %config.agent.listen,
                "another agent holds this node's spool and port: waiting for it to stop"
            );
            let waiting = handover::announce(&spool_dir)?;
            let (events, _) = subscribe(
                holder.as_mut(),
                held.events.take(),
                held.events_inbox.take(),
            )?;
            let listener = EventListener::start(
                events,
                ended::Writer::create(waiting.dir())?,
                metrics.clone(),
            )
            .context("cannot start the event listener")?;
            spool::wait_until_released(&spool_dir)?;
            tracing::info!("the previous agent stopped; taking over");
            (
                bind_once_released(config.agent.listen),
                Some((waiting, listener)),
            )
        }
        bound => (bound, None),
    };
    let listen = listen.map_err(|e| {
        let problem = format!(
            "agent.listen: cannot listen on {}: {e}",
            config.agent.listen
        );
        if e.kind() == std::io::ErrorKind::AddrNotAvailable {
            bad(format!("{problem} (no such address on this host)")).into()
        } else {
            anyhow::anyhow!("config {}: {problem}", args.config.display())
        }
    })?;
    // Created only now that every check has passed.
    let parquet = parquet_dir.as_deref().map(ParquetSink::open).transpose()?;
    let spool = Spool::open(
        &spool_dir,
        sinks.spool.cap_mib << 20,
        &sink::names(connection.is_some(), parquet.is_some()),
    )?;
    for setting in sysctl::ALL {
        if sysctl::ensure(setting)? == Outcome::Enabled {
            tracing::info!(sysctl = setting.name, "enabled");
        }
    }
    // Subscribed before ClickHouse is checked and the inventory listed
    // (up to a minute): the listener queues connections that end
    // meanwhile on disk.
    let (waiting, listener) = match early {
        Some((waiting, listener)) => {
            tracing::info!(
                unwatched_seconds = 0.0,
                "subscribed to ended connections while the previous agent still ran: none ended unwatched"
            );
            (Some(waiting), listener)
        }
        None => {
            let (events, kept) = subscribe(
                holder.as_mut(),
                held.events.take(),
                held.events_inbox.take(),
            )?;
            if kept {
                metrics.unwatched.set(0.0);
                tracing::info!(
                    unwatched_seconds = 0.0,
                    "took the subscription to ended connections over from the holder: the connections that ended since the previous agent stopped wait on it"
                );
            } else {
                report_unwatched(&spool, &metrics);
            }
            let writer = ended::Writer::create(spool.dir())?;
            let listener = EventListener::start(events, writer, metrics.clone())
                .context("cannot start the event listener")?;
            (None, listener)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if let Some(connection) = &connection {
            match clickhouse::check(&connection.client()?, connection).await {
                Ok(()) => {}
                Err(error @ ConnectionError::Credentials { .. }) => {
                    return Err(BadInput(error.to_string()).into())
                }
                Err(error) => tracing::warn!(
                    %error,
                    "ClickHouse is not reachable yet; records wait in the spool"
                ),
            }
        }
        let sink = Configured {
            clickhouse: connection.as_ref().map(ClickHouseSink::new).transpose()?,
            parquet,
        };
        let started = Started {
            listen,
            listener,
            waiting,
            metrics,
            holder,
            held_zeroing: held.zeroing,
            held_zeroing_inbox: held.zeroing_inbox,
        };
        serve(config, prepared, started, base, node, spool, sink).await
    })
}

/// The holder's connection and what it kept from the agent before this
/// one; without a holder (none configured, or none answering), the agent
/// runs on, and a kill loses what only its sockets held.
fn connect_holder(
    socket: Option<&std::path::Path>,
    base: &std::path::Path,
) -> (Option<Holder>, Held) {
    let Some(socket) = socket else {
        return (None, Held::default());
    };
    match Holder::connect(&base.join(socket)) {
        Ok((holder, held)) => (Some(holder), held),
        Err(error) => {
            tracing::error!(%error, "no holder: a kill of this agent loses what the kernel queued on its sockets");
            (None, Held::default())
        }
    }
}

/// The subscription to ended connections: the one the holder kept (with
/// its inbox), or a new one; the holder keeps a copy. Says whether it was
/// kept.
fn subscribe(
    holder: Option<&mut Holder>,
    kept: Option<std::os::fd::OwnedFd>,
    kept_inbox: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<(EndedConnections, bool)> {
    let was_kept = kept.is_some();
    let events = match kept {
        Some(fd) => EndedConnections::adopt(fd, kept_inbox)?,
        None => EndedConnections::subscribe()?,
    };
    holder::keep_events(holder, &events);
    Ok((events, was_kept))
}

/// Bind `listen` after the previous agent let go of the spool: it closes
/// its port a moment later, while its process exits, so the port may still
/// be taken for that moment.
fn bind_once_released(listen: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(listen) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            bound => return bound,
        }
    }
}

/// Says how long no agent listened for ended connections on this node
/// before this one subscribed: from the previous agent's last sign of life
/// in the spool (its listener's stop, or, if it was killed, its last
/// commit or queued connection). Connections whose entries ended in
/// between lost their bytes since its last read.
fn report_unwatched(spool: &Spool, metrics: &Metrics) {
    let last_seen = spool
        .last_commit_at()
        .max(ended::last_written_at(spool.dir()));
    let Some(last_seen) = last_seen else {
        return;
    };
    let seconds = std::time::SystemTime::now()
        .duration_since(last_seen)
        .unwrap_or_default()
        .as_secs_f64();
    metrics.unwatched.set(seconds);
    tracing::info!(
        unwatched_seconds = %format_args!("{seconds:.3}"),
        "subscribed to ended connections: no agent listened on this node since the previous one stopped; connections whose entries ended meanwhile lost their bytes since its last read"
    );
}

/// What the agent started before anything asynchronous: its HTTP
/// address, the listener of ended connections and its counters.
struct Started {
    listen: std::net::TcpListener,
    listener: EventListener,
    /// Set if it waited for the agent it replaces.
    waiting: Option<handover::Waiting>,
    metrics: Arc<Metrics>,
    /// Keeps the netlink sockets open across a kill, if configured.
    holder: Option<Holder>,
    /// The zeroing socket the holder kept from the agent before this one.
    held_zeroing: Option<std::os::fd::OwnedFd>,
    /// The inbox of that socket's answers, kept with it.
    held_zeroing_inbox: Option<std::os::fd::OwnedFd>,
}

async fn serve(
    config: Config,
    prepared: config::Prepared,
    started: Started,
    base: PathBuf,
    node: String,
    spool: Spool,
    sink: Configured,
) -> anyhow::Result<()> {
    let agent = config.agent.clone();
    let Started {
        listen,
        listener,
        waiting,
        metrics,
        mut holder,
        held_zeroing,
        held_zeroing_inbox,
    } = started;
    listen
        .set_nonblocking(true)
        .context("cannot set the HTTP socket non-blocking")?;
    let http_listener = tokio::net::TcpListener::from_std(listen)
        .with_context(|| format!("cannot listen on {} (agent.listen)", agent.listen))?;
    let spool = Arc::new(Mutex::new(spool));
    let delivery: Vec<(&'static str, Arc<DeliveryCounts>)> = sink
        .names()
        .into_iter()
        .map(|name| (name, Arc::default()))
        .collect();
    let mut registry = Registry::default();
    metrics.register(&mut registry, spool.clone(), delivery.clone());
    metrics.read_interval.set(i64::from(agent.interval_seconds));
    let workload_series = agent.workload_metrics.enabled.then(|| {
        let wanted = &agent.workload_metrics;
        let series = Arc::new(Mutex::new(WorkloadSeries::new(
            &config.cluster,
            wanted.max_series,
            wanted.idle_seconds,
        )));
        registry
            .sub_registry_with_prefix("tollgate")
            .register_collector(Box::new(WorkloadCollector(series.clone())));
        series
    });
    let health = Arc::new(Health::new(agent.interval_seconds));
    tokio::spawn(http::serve(
        http_listener,
        Arc::new(registry),
        health.clone(),
    ));

    let spool_dir = spool
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .dir()
        .to_owned();

    let world = config::load_world(&config, prepared)
        .await
        .map_err(|e| BadInput(e.to_string()))?;
    let sink = Arc::new(sink);
    // One delivery task per sink, each woken by the batcher.
    let wakes: Vec<_> = delivery
        .iter()
        .map(|_| Arc::new(tokio::sync::Notify::new()))
        .collect();
    let delivering: Vec<_> = delivery
        .iter()
        .zip(&wakes)
        .enumerate()
        .map(|(index, ((_, counts), wake))| {
            tokio::spawn(deliver_forever(
                spool.clone(),
                sink.clone(),
                index,
                counts.clone(),
                wake.clone(),
            ))
        })
        .collect();

    let table = match held_zeroing {
        Some(fd) => TableReader::adopt(fd, held_zeroing_inbox)?,
        None => TableReader::open()?,
    };
    holder::keep_zeroing(holder.as_mut(), &table);
    let tokens = TokenMaker::new(&node).context("cannot make batch tokens")?;
    let mut reader = Reader {
        table,
        // Where the last commit left off: set by the reader's recovery.
        ended: ended::Queue::new(&spool_dir, ended::Position::default()),
        listener,
        waiting,
        metering: Metering::new(
            Enricher::new(&config.cluster, &node, &config.node_team),
            world.classifier,
            world.inventory,
            Batcher::new(
                spool.clone(),
                tokens,
                agent.batch_rows,
                wakes,
                metrics.clone(),
            ),
            metrics,
            PerWorkload::new(
                workload_series.clone(),
                (agent.top_talkers > 0).then(|| TopTalkers::new(agent.top_talkers)),
            ),
        ),
        interval: agent.interval_seconds,
        health: health.clone(),
        coverage: Default::default(),
        // The agent turned them on (or found them on) before starting.
        settings_on: [true; sysctl::ALL.len()],
        postponed: None,
        holder,
    };
    // Exits on a failed take-over: the queue it left is taken over by the
    // next start, and none of it is metered twice.
    reader
        .recover()
        .context("cannot take over from the previous agent")?;
    let (stop_reading, stop) = mpsc::channel();
    let reading = std::thread::Builder::new()
        .name("conntrack-reader".into())
        .spawn(move || reader.run(stop))
        .context("cannot start the reader")?;
    health.set_ready();
    tracing::info!(
        node,
        cluster = config.cluster,
        interval_seconds = agent.interval_seconds,
        listen = %agent.listen,
        "metering"
    );

    shutdown_signal().await?;
    tracing::info!("stopping: one last read, then delivery");
    let _ = stop_reading.send(());
    let listener = tokio::task::spawn_blocking(move || reading.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    for task in &delivering {
        task.abort();
    }
    let counts: Vec<&DeliveryCounts> = delivery.iter().map(|(_, c)| c.as_ref()).collect();
    let timeout = Duration::from_secs(agent.shutdown_timeout_seconds);
    // When something scrapes the agent regularly, the last read's counters
    // wait for scrapes until one has shown them all (a series born in the
    // last read is shown at 0 first): without them Prometheus would never
    // see those bytes.
    let scrapes = if health.is_scraped() {
        health.scrapes()
    } else {
        0
    };
    let (delivered, scraped) = tokio::join!(
        tokio::time::timeout(
            timeout,
            deliver::drain_each(&spool, sink.as_ref(), RetryPolicy::default(), &counts),
        ),
        tokio::time::timeout(timeout, async {
            let mut after = scrapes;
            while after > 0 {
                health.scraped_after(after).await;
                let shown = workload_series.as_ref().is_none_or(|series| {
                    series
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .fully_shown()
                });
                if shown {
                    break;
                }
                after = health.scrapes();
            }
        }),
    );
    if scraped.is_err() {
        tracing::warn!(
            "no scrape of /metrics came after the last read; Prometheus misses that read's bytes"
        );
    }
    // Connections that ended since the last read wait on disk for the
    // next agent, with those that end until this one exits.
    tokio::task::spawn_blocking(move || listener.finish()).await?;
    match delivered {
        Ok(result) => {
            result?;
            tracing::info!("every record delivered");
        }
        Err(_) => {
            let left = spool.lock().map(|s| s.len()).unwrap_or_default();
            tracing::warn!(
                batches = left,
                spool = %base.join(&config.sinks.spool.dir).display(),
                "delivery did not finish in time; the next start delivers the rest from the spool"
            );
        }
    }
    Ok(())
}

/// Deliver to the sink at `index` of `sinks` whatever the spool holds for
/// it whenever the reader adds a batch (and every few seconds, to retry
/// after an outage).
async fn deliver_forever(
    spool: Arc<Mutex<Spool>>,
    sinks: Arc<Configured>,
    index: usize,
    counts: Arc<DeliveryCounts>,
    wake: Arc<tokio::sync::Notify>,
) {
    let each = sinks.each();
    let sink = &each[index];
    loop {
        if let Err(error) = deliver::drain(&spool, sink, RetryPolicy::default(), &counts).await {
            tracing::error!(sink = sink.name(), %error, "delivery stopped; retrying");
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
