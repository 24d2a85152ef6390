use super::*;

#[test]
fn backoff_doubles_from_initial_up_to_max() {
    let initial = Duration::from_secs(60);
    let max = Duration::from_secs(600);
    let delays: Vec<u64> = (1..=6).map(|n| retry_delay(n, initial, max).as_secs()).collect();
    assert_eq!(delays, [60, 120, 240, 480, 600, 600]);
    assert_eq!(retry_delay(1000, initial, max), max);
    assert_eq!(retry_delay(0, initial, max), initial);
}

#[test]
fn hard_bounces_are_address_failures_only() {
    assert!(is_hard_bounce(&ServerReply::new(550, "5.1.1 no such user")));
    assert!(is_hard_bounce(&ServerReply::new(550, "mailbox unavailable")));
    assert!(!is_hard_bounce(&ServerReply::new(552, "5.3.4 message too big")));
    assert!(!is_hard_bounce(&ServerReply::new(554, "5.7.1 spam")));
    assert!(!is_hard_bounce(&ServerReply::new(450, "4.1.1 try later")));
}
