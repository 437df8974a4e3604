//! Parsing `iptables-save` output (and restore input) must never panic, and what parses
//! must print back (`Display`) to text that parses to the same rules.

#![no_main]

use kproxy_iptables::save;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = save::split_args(text);
    let Ok(parsed) = save::parse(text) else {
        return;
    };
    for table in &parsed.tables {
        let mut again = format!("*{}\n", table.name);
        for rule in table.appended() {
            again.push_str(&rule.to_string());
            again.push('\n');
        }
        again.push_str("COMMIT\n");
        let reparsed = save::parse(&again).expect("printed rules parse");
        let before: Vec<_> = table.appended().collect();
        let after: Vec<_> = reparsed.tables[0].appended().collect();
        assert_eq!(before, after);
    }
});
