// Export the stable interface's symbol versions and soname.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rerun-if-changed=libxencall.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/libxencall.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libxencall.so.1");
}
