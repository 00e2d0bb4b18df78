// Export the stable interface's symbol versions and soname.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=libxenevtchn.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/libxenevtchn.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxenevtchn.so.1");
}
