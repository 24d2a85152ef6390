//! Fuzzes the command parser: any bytes must give a command or an error with a valid reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_smtp::SmtpCommand;

fuzz_target!(|line: &[u8]| {
    if let Err(error) = SmtpCommand::parse(line) {
        let reply = error.reply();
        assert!((400..600).contains(&reply.code()));
    }
});
