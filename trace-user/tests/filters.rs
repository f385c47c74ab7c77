//! The filters: port, pid, thread name (as threads are renamed, and made with a dead one's
//! id), cgroup; what they leave out never reaches the ring buffer.

mod common;

use std::{
    io::{Read, Write},
    thread,
};

use common::*;

#[test]
fn port_filter_keeps_other_connections_out_of_the_ring_buffer() {
    let (mut c1, mut s1) = tcp_pair();
    let (mut c2, mut s2) = tcp_pair();
    let port = c1.peer_addr().unwrap().port().to_string();
    let trace = Trace::start(&["--port", &port]);
    for _ in 0..50 {
        c1.write_all(&[1u8; 500]).unwrap();
        c2.write_all(&[2u8; 500]).unwrap();
        // Replies from the server side of connection 1 count too: its local port matches.
        s1.write_all(&[3u8; 10]).unwrap();
    }
    let mut buf = vec![0u8; 50 * 500];
    s1.read_exact(&mut buf).unwrap();
    s2.read_exact(&mut buf).unwrap();
    let mut small = [0u8; 500];
    c1.read_exact(&mut small).unwrap();
    let (ino1, ino_s1) = (ino(&c1), ino(&s1));
    let out = trace.stop();
    let end = end(&out);
    let sends: Vec<_> = out.iter().filter(|v| v["kind"] == "send").collect();
    assert_eq!(
        sends.len(),
        100,
        "50 writes on each side of connection 1 and none of connection 2"
    );
    assert!(
        sends
            .iter()
            .all(|e| e["sock_id"] == ino1 || e["sock_id"] == ino_s1)
    );
    // Every record the kernel wrote is accounted for, and every event of every kind (sends,
    // receives, ACKs) belongs to connection 1.
    let by_kind = &end["records_by_kind"];
    assert_eq!(u(&by_kind["send"]), 100);
    let counted: u64 = by_kind.as_object().unwrap().values().map(u).sum();
    assert_eq!(u(&end["records"]), counted);
    let reads = out.iter().filter(|v| v["kind"] == "recv").count();
    assert!(reads >= 2, "the reads on connection 1");
    for e in out.iter().filter(|v| !v["sock_id"].is_null()) {
        assert!(
            e["sock_id"] == ino1 || e["sock_id"] == ino_s1,
            "an event of another connection: {e}"
        );
    }
}

#[test]
fn comm_filter_selects_one_thread() {
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid, "-c", "sb-chosen"]);
    let run = |name: &'static str| {
        thread::spawn(move || {
            set_thread_name(name);
            let (mut c, mut s) = tcp_pair();
            for _ in 0..20 {
                c.write_all(&[0u8; 100]).unwrap();
            }
            let mut buf = [0u8; 2000];
            s.read_exact(&mut buf).unwrap();
            ino(&c)
        })
    };
    let chosen = run("sb-chosen").join().unwrap();
    let other = run("sb-other").join().unwrap();
    let out = trace.stop();
    assert_eq!(events(&out, "send", chosen).len(), 20);
    assert_eq!(events(&out, "send", other).len(), 0);
    assert!(
        out.iter()
            .filter(|v| v["kind"] == "send")
            .all(|v| v["comm"] == "sb-chosen")
    );
}

/// A send event's `comm` is the thread's name at that call: the kernel keeps a thread's name
/// between its calls and must drop it at a rename (every send here, no filter).
#[test]
fn send_events_name_the_thread_as_renamed_between_writes() {
    const NAMES: [&str; 3] = ["sb-first", "sb-second", "sb-first"];
    const WRITES: usize = 50;
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid]);
    let ino = thread::spawn(|| {
        let (mut c, mut s) = tcp_pair();
        for name in NAMES {
            set_thread_name(name);
            for _ in 0..WRITES {
                c.write_all(&[0u8; 100]).unwrap();
            }
        }
        let mut buf = vec![0u8; NAMES.len() * WRITES * 100];
        s.read_exact(&mut buf).unwrap();
        ino(&c)
    })
    .join()
    .unwrap();
    let out = trace.stop();
    let sends = events(&out, "send", ino);
    let names: Vec<&str> = sends.iter().map(|e| e["comm"].as_str().unwrap()).collect();
    let expected: Vec<&str> = NAMES
        .iter()
        .flat_map(|n| std::iter::repeat_n(*n, WRITES))
        .collect();
    assert_eq!(names, expected);
}

/// A new thread can get a dead one's id, with its parent's name and no rename: the comm
/// filter's verdict on the dead thread must not pass it (the kernel remembers verdicts by
/// thread id). The id is handed out again through `ns_last_pid`, as CRIU does.
#[test]
fn comm_filter_judges_a_new_thread_with_a_dead_ones_id_anew() {
    const WRITES: usize = 20;
    let pid = std::process::id().to_string();
    let trace = Trace::start(&["-p", &pid, "-c", "sb-chosen"]);
    let (c, mut s) = tcp_pair();
    let write = |mut c: std::net::TcpStream| {
        for _ in 0..WRITES {
            c.write_all(&[0u8; 100]).unwrap();
        }
    };
    let first = c.try_clone().unwrap();
    let tid = thread::spawn(move || {
        set_thread_name("sb-chosen");
        write(first);
        unsafe { libc::gettid() }
    })
    .join()
    .unwrap();
    // Another task may take the id first: try again.
    let reused = (0..100).any(|_| {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (tid - 1).to_string())
            .expect("write /proc/sys/kernel/ns_last_pid (root, CONFIG_CHECKPOINT_RESTORE)");
        let c = c.try_clone().unwrap();
        thread::spawn(move || {
            let same = unsafe { libc::gettid() } == tid;
            if same {
                // Its name is its parent's, the test's.
                let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
                assert_ne!(name.trim(), "sb-chosen");
                write(c);
            }
            same
        })
        .join()
        .unwrap()
    });
    assert!(reused, "no new thread got the id {tid} in 100 tries");
    let mut buf = vec![0u8; 2 * WRITES * 100];
    s.read_exact(&mut buf).unwrap();
    let out = trace.stop();
    let sends = events(&out, "send", ino(&c));
    let callers: Vec<String> = sends
        .iter()
        .map(|v| format!("{} {}", v["tid"], v["comm"]))
        .collect();
    assert_eq!(
        sends.len(),
        WRITES,
        "only the first thread's writes, not those of the new thread with its id: {callers:?}"
    );
    assert!(sends.iter().all(|v| v["comm"] == "sb-chosen"));
}

#[test]
fn cgroup_filter_selects_a_process_in_that_cgroup() {
    let dir = format!("{}/sockbuf-test-{}", cgroup2_root(), std::process::id());
    std::fs::create_dir(&dir).expect("create a cgroup");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let trace = Trace::start(&["--cgroup", &dir]);
    // A shell that joins the cgroup, then writes five lines over bash's /dev/tcp.
    let script = format!(
        "echo $$ > {dir}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port} && for i in 1 2 3 4 5; do echo hello >&3; done"
    );
    let mut sh = std::process::Command::new("bash")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut buf = [0u8; 30];
    s.read_exact(&mut buf).unwrap();
    assert!(sh.wait().unwrap().success());
    // This process is not in the cgroup: its writes must not appear.
    s.write_all(b"reply").unwrap();
    let out = trace.stop();
    std::fs::remove_dir(&dir).expect("remove the cgroup");
    let sends: Vec<_> = out.iter().filter(|v| v["kind"] == "send").collect();
    assert_eq!(sends.len(), 5, "five echo writes from the shell: {sends:?}");
    assert!(
        sends
            .iter()
            .all(|e| e["comm"] == "bash" && u(&e["copied"]) == 6)
    );
    assert!(sends.iter().all(|e| u(&e["rport"]) == u64::from(port)));
}
