//! A TCP proxy that behaves like a NAT gateway: it silently forgets a flow that carried no packet
//! for longer than its idle limit (AWS NAT gateways and NLBs: 350 s).
//!
//! "No packet" includes TCP keepalive probes, which carry no data and never reach user space. The
//! proxy therefore watches the kernel's per-socket segment counter (`TCP_INFO.tcpi_segs_in`) on
//! both of its sockets, so a keepalive probe counts as traffic exactly as it does for a NAT
//! table. A forgotten flow is never closed or reset — its bytes are just no longer forwarded —
//! so the ends learn of it only the way they would behind a real NAT gateway.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// A running middlebox; stops when dropped.
#[derive(Debug)]
pub struct IdleDropProxy {
    pub addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl IdleDropProxy {
    /// Listens on 127.0.0.1 and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr, idle_limit: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind middlebox");
        let addr = listener.local_addr().expect("middlebox address");
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                tokio::spawn(flow(client, server, idle_limit, Arc::clone(&counter)));
            }
        });
        Self { addr, dropped, task }
    }

    /// How many flows were forgotten for idleness.
    pub fn dropped_flows(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for IdleDropProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Segments received so far on a socket (data, ACKs and keepalive probes alike).
#[allow(unsafe_code)]
fn segments_in(stream: &TcpStream) -> u32 {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket fd, a correctly sized, writable buffer and its length.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 { info.tcpi_segs_in } else { 0 }
}

async fn flow(client: TcpStream, server: TcpStream, idle_limit: Duration, dropped: Arc<AtomicUsize>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let forgotten = Arc::new(AtomicBool::new(false));
    let last_seen = Arc::new(Mutex::new(Instant::now()));
    let (client, server) = (Arc::new(client), Arc::new(server));

    let watcher = {
        let (client, server, forgotten, last_seen) =
            (Arc::clone(&client), Arc::clone(&server), Arc::clone(&forgotten), Arc::clone(&last_seen));
        async move {
            let mut seen = (segments_in(&client), segments_in(&server));
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = (segments_in(&client), segments_in(&server));
                let mut last = last_seen.lock().await;
                if now != seen {
                    seen = now;
                    *last = Instant::now();
                } else if last.elapsed() > idle_limit {
                    forgotten.store(true, Ordering::SeqCst);
                    dropped.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    };
    let pump = |from: Arc<TcpStream>, to: Arc<TcpStream>, forgotten: Arc<AtomicBool>| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if from.readable().await.is_err() {
                return;
            }
            let n = match from.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            if forgotten.load(Ordering::SeqCst) {
                continue; // a forgotten flow's packets vanish
            }
            let mut off = 0;
            while off < n {
                if to.writable().await.is_err() {
                    return;
                }
                match to.try_write(&buf[off..n]) {
                    Ok(w) => off += w,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    };
    let up = pump(Arc::clone(&client), Arc::clone(&server), Arc::clone(&forgotten));
    let down = pump(Arc::clone(&server), Arc::clone(&client), Arc::clone(&forgotten));
    tokio::join!(watcher, up, down);
    // Both sockets stay open (no FIN, no RST) until both ends give up.
    drop((client, server));
}
