//! Mozilla's root certificates as one PEM bundle, written at build time. The SDK's trust
//! store only takes PEM; encoding some 150 roots from DER at every start was half of a
//! function's init (about 1.5 million instructions: see `timeline_aws::config`).

use base64::Engine;

fn main() {
    let mut pem = String::new();
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let out = std::path::Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("mozilla-roots.pem");
    std::fs::write(out, pem).expect("writing the PEM bundle");
    println!("cargo::rerun-if-changed=build.rs");
}
