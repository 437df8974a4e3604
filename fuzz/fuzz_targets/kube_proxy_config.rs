//! Parsing a KubeProxyConfiguration file must never panic, whatever the text; what parses
//! must validate without panicking and render back to YAML that parses again.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = kproxy_config::parse(text) {
        let _ = loaded.config.validate();
        let yaml = loaded.config.to_yaml();
        kproxy_config::parse(&yaml).expect("rendered configuration parses");
    }
    let _ = kproxy_config::duration::parse(text);
});
