//! The command line's contract: help, and bad input rejected with exit
//! code 2 and a message naming the offending argument. Needs no privileges.

use std::process::Command;

use tollgate_tests::tollgate::binary;

fn tollgate(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("tollgate runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_describes_the_conntrack_commands() {
    let (code, stdout, _) = tollgate(&["conntrack", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("dump") && stdout.contains("watch"),
        "{stdout}"
    );
    let (code, stdout, _) = tollgate(&["conntrack", "dump", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("--no-zero") && stdout.contains("zeroes"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    for (args, needle) in [
        (
            &["conntrack", "watch", "--duration", "-1"][..],
            "--duration",
        ),
        (
            &["conntrack", "watch", "--duration", "soon"][..],
            "is not a number of seconds",
        ),
        (
            &["conntrack", "watch", "--duration", "0"][..],
            "must be a positive number",
        ),
        (
            &["conntrack", "dump", "--zero-everything"][..],
            "--zero-everything",
        ),
        (&["conntrack", "scan"][..], "scan"),
        (&[][..], "Usage"),
    ] {
        let (code, _, stderr) = tollgate(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
