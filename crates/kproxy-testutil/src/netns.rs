use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

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
        ns.run(&["ip", "link", "set", "lo", "up"])?;
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
    a.run(&["ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if])?;
    a.run(&["ip", "link", "set", b_if, "netns", b.name()])?;
    a.run(&["ip", "link", "set", a_if, "up"])?;
    b.run(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
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
