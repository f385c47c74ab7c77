use which::which;

/// Building this crate needs bpf-linker; say so plainly instead of failing deep in rustc.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found in PATH: run `cargo xtask setup` (or see README)"
        );
    }
}
