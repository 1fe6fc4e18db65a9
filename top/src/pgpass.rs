//! `~/.pgpass` (or `PGPASSFILE`) the way libpq reads it: `host:port:database:user:password` lines, `*`
//! matching anything in the first four fields, `\:` and `\\` escapes, `#` comments, first match wins, and
//! the file ignored (with a warning) when group or others can read it.

use std::path::Path;

/// The key a password is looked up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgpassKey<'a> {
    /// Host name, or `localhost` for the default socket directory.
    pub host: &'a str,
    /// Port, as text.
    pub port: &'a str,
    /// Database name.
    pub database: &'a str,
    /// User name.
    pub user: &'a str,
}

/// Why the password file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgpassSkipped {
    /// Readable by group or others: libpq ignores such files, so do we.
    #[error("password file {0} has group or world access; permissions should be u=rw (0600) or less")]
    Permissions(String),
    /// Not a plain file.
    #[error("password file {0} is not a plain file")]
    NotAFile(String),
}

/// Splits one line into its five fields, undoing `\:` and `\\`; `None` for comments and short lines.
fn fields(line: &str) -> Option<[String; 5]> {
    if line.starts_with('#') {
        return None;
    }
    let mut out: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => out.last_mut()?.push(n),
                None => out.last_mut()?.push('\\'),
            },
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut()?.push(c),
        }
    }
    out.try_into().ok()
}

/// The password for `key` in the text of a password file.
pub fn find(text: &str, key: &PgpassKey<'_>) -> Option<String> {
    let wanted = [key.host, key.port, key.database, key.user];
    text.lines().filter_map(|l| fields(l.trim_end_matches('\r'))).find_map(|f| {
        let matches = f[..4].iter().zip(wanted).all(|(field, want)| field == "*" || field == want);
        matches.then(|| f[4].clone())
    })
}

/// Reads `path` and looks `key` up. A missing file is `Ok(None)`.
///
/// # Errors
/// [`PgpassSkipped`] when the file exists but libpq would not use it.
pub fn lookup(path: &Path, key: &PgpassKey<'_>) -> Result<Option<String>, PgpassSkipped> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(None) };
    if !meta.is_file() {
        return Err(PgpassSkipped::NotAFile(path.display().to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(PgpassSkipped::Permissions(path.display().to_string()));
        }
    }
    Ok(std::fs::read_to_string(path).ok().and_then(|text| find(&text, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: PgpassKey<'static> = PgpassKey { host: "db.example", port: "5433", database: "app", user: "mon" };

    #[test]
    fn first_match_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.example:5432:app:mon:wrong-port\n\
                    other:*:*:*:other-host\n\
                    db.example:*:app:mon:p\\:a\\\\ss:with:colons\n\
                    *:*:*:*:fallback\n";
        assert_eq!(find(text, &KEY).as_deref(), Some("p:a\\ss:with:colons"));
        let nobody = PgpassKey { user: "x", ..KEY };
        assert_eq!(find(text, &nobody).as_deref(), Some("fallback"));
        assert_eq!(find("short:line\n", &KEY), None);
        assert_eq!(find("", &KEY), None);
    }

    #[test]
    fn loose_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sqlc-top-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(lookup(&path, &KEY), Err(PgpassSkipped::Permissions(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&path, &KEY), Ok(Some("secret".to_owned())));
        assert_eq!(lookup(&dir.join("missing"), &KEY), Ok(None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
