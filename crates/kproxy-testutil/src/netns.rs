use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this process runs as root (euid 0), which every privileged helper here needs.
pub fn require_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A named network namespace that exists for as long as this guard lives.
///
/// The name is unique per process and call (`kpt-<tag>-<pid>-<n>`), at most 15 bytes of it
/// are used for interface names elsewhere, so keep `tag` short. Dropping the guard deletes the
/// namespace; processes still running inside it keep it alive until they exit.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates a fresh namespace and brings its loopback interface up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("kpt-{tag}-{}-{n}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind-mount path (`/run/netns/<name>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A [`Command`] that runs `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `args` inside the namespace and returns its standard output; a non-zero exit status
    /// is an error carrying the command line and its standard error.
    pub fn run(&self, args: &[&str]) -> io::Result<String> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = self.command(program);
        cmd.args(rest);
        run_checked(&mut cmd)
    }

    /// Runs `ip -n <name> args…`: an `ip(8)` command against this namespace, without the cost
    /// of `ip netns exec` (no mount namespace, no `/sys` remount). Returns standard output.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs several `ip(8)` commands against this namespace in one process (`ip -batch`).
    ///
    /// Each element of `commands` is one command line without the leading `ip`, e.g.
    /// `"addr add 10.0.0.1/24 dev eth0"`. Stops at the first failing command and returns an
    /// error naming it.
    pub fn ip_batch<S: AsRef<str>>(&self, commands: &[S]) -> io::Result<()> {
        let mut script = String::new();
        for c in commands {
            let c = c.as_ref();
            if c.contains('\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ip batch command contains a newline: {c:?}"),
                ));
            }
            script.push_str(c);
            script.push('\n');
        }
        let out = self.run_ip_batch(&script)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip -n {} -batch failed ({}): {}\nscript:\n{script}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Waits until every IPv6 address in this namespace is usable: not tentative, and with
    /// its `local` route installed.
    ///
    /// Even an address added with `nodad` gets its local route from a kernel work item that
    /// runs a little after `ip addr add` returns; until then traffic to it is routed like
    /// traffic to any other address. The interfaces must be up (addresses on a down interface
    /// never get there). Takes a few milliseconds; errors after `timeout`.
    pub fn wait_ipv6_ready(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out =
                self.run_ip_batch_with(&["-6", "-o"], "addr show\nroute show table local\n")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut addrs = Vec::new();
            let mut local = std::collections::HashSet::new();
            let mut tentative = Vec::new();
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "inet6") {
                    let (Some(dev), Some(addr)) = (words.get(1), words.get(i + 1)) else {
                        continue;
                    };
                    let addr = addr.split('/').next().unwrap_or(addr);
                    let dev = dev.split('@').next().unwrap_or(dev);
                    if words.contains(&"tentative") {
                        tentative.push(format!("{addr} on {dev}"));
                    }
                    addrs.push((addr.to_owned(), dev.to_owned()));
                } else if words.first() == Some(&"local") {
                    let dev = words
                        .iter()
                        .position(|w| *w == "dev")
                        .and_then(|i| words.get(i + 1));
                    if let (Some(addr), Some(dev)) = (words.get(1), dev) {
                        local.insert((addr.to_string(), dev.to_string()));
                    }
                }
            }
            let missing: Vec<String> = addrs
                .iter()
                .filter(|a| !local.contains(*a))
                .map(|(a, d)| format!("{a} on {d}"))
                .collect();
            if out.status.success() && missing.is_empty() && tentative.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "IPv6 addresses in {} not ready after {timeout:?}: tentative {tentative:?}, \
                         no local route {missing:?} ({})",
                        self.name,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn run_ip_batch(&self, script: &str) -> io::Result<Output> {
        self.run_ip_batch_with(&[], script)
    }

    fn run_ip_batch_with(&self, opts: &[&str], script: &str) -> io::Result<Output> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["-n", &self.name])
            .args(opts)
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = script.as_bytes().to_vec();
        let writer = std::thread::spawn(move || pipe.write_all(&input));
        let output = child.wait_with_output()?;
        writer
            .join()
            .map_err(|_| io::Error::other("stdin writer panicked"))??;
        Ok(output)
    }

    /// Sets kernel parameters inside this namespace by writing `/proc/sys` from a thread that
    /// entered it (no process is spawned).
    ///
    /// Keys are written as `sysctl(8)` does: dotted (`net.ipv4.ip_forward`) or as a path below
    /// `/proc/sys` (`net/ipv4/conf/eth0.100/rp_filter`, for names that contain dots).
    /// Only the `net.*` parameters are per namespace; setting anything else would change the
    /// host, so other keys are refused.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> io::Result<()> {
        let mut jobs = Vec::with_capacity(settings.len());
        for (key, value) in settings {
            jobs.push((sysctl_path(key)?, value.to_string()));
        }
        self.enter(move || -> io::Result<()> {
            for (path, mut value) in jobs {
                // As `echo` writes it: an empty value (an empty bitmap, say) must still be a
                // write, and the kernel takes the newline as the end of the value.
                if !value.ends_with('\n') {
                    value.push('\n');
                }
                std::fs::write(&path, value.as_bytes()).map_err(|e| {
                    io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
                })?;
            }
            Ok(())
        })?
    }

    /// Sets one kernel parameter inside this namespace; see [`Netns::sysctls`].
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.sysctls(&[(key, value)])
    }

    /// Reads one kernel parameter inside this namespace (trimmed); see [`Netns::sysctls`] for
    /// the key syntax.
    pub fn read_sysctl(&self, key: &str) -> io::Result<String> {
        let path = sysctl_path(key)?;
        self.enter(move || std::fs::read_to_string(&path))?
            .map(|s| s.trim().to_owned())
    }

    /// Runs `args` inside the namespace, feeding `stdin`, and returns the whole [`Output`]
    /// whatever the exit status.
    pub fn run_with_input(&self, args: &[&str], stdin: &[u8]) -> io::Result<Output> {
        use std::io::Write;
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = stdin.to_vec();
        let writer = std::thread::spawn(move || pipe.write_all(&input));
        let output = child.wait_with_output()?;
        writer
            .join()
            .map_err(|_| io::Error::other("stdin writer panicked"))??;
        Ok(output)
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and waits for it.
    ///
    /// Sockets created inside `f` belong to the namespace. Use [`Netns::spawn`] for work that
    /// must outlive the call (a server).
    pub fn enter<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(f)?
            .join()
            .map_err(|_| io::Error::other("thread in namespace panicked"))
    }

    /// Spawns an OS thread that enters this namespace and then runs `f`.
    pub fn spawn<F, R>(&self, f: F) -> io::Result<std::thread::JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = File::open(&self.path)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
                drop(file);
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                // The caller gets the error from the channel and drops this handle; never run `f`
                // in the wrong namespace.
                assert!(ok, "setns failed; the error was returned to the caller");
                f()
            })?;
        rx.recv()
            .map_err(|_| io::Error::other("namespace thread died before entering"))??;
        Ok(handle)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Creates a veth pair with end `a_if` in `a` and end `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> io::Result<()> {
    // Create both ends inside `a` (names are per namespace, so they cannot clash with the
    // host's), then move one end over.
    a.run(&[
        "ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if,
    ])?;
    a.run(&["ip", "link", "set", b_if, "netns", b.name()])?;
    a.run(&["ip", "link", "set", a_if, "up"])?;
    b.run(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// Maps a sysctl key to its `/proc/sys` path, refusing anything outside `net/` (only those are
/// per network namespace).
fn sysctl_path(key: &str) -> io::Result<PathBuf> {
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let ok = rel.starts_with("net/")
        && !rel
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing sysctl {key:?}: only net.* parameters are per namespace"),
        ));
    }
    Ok(Path::new("/proc/sys").join(rel))
}

fn run_checked(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
