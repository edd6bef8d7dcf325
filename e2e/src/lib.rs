//! End-to-end support. Today: the pieces the foundation demo prints with. The lab (a
//! multi-node cluster in network namespaces) arrives with the lab issue.

/// Prints a reachability grid in the conformance catalogue's layout: rows are clients,
/// columns servers, `.` reachable, `X` blocked.
pub fn format_grid(names: &[String], allowed: impl Fn(usize, usize) -> bool) -> String {
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut out = format!("{:width$}  ", "", width = width);
    for n in names {
        out.push_str(&format!("{} ", n.chars().last().unwrap_or(' ')));
    }
    out.push('\n');
    for (i, n) in names.iter().enumerate() {
        out.push_str(&format!("{n:width$}  "));
        for j in 0..names.len() {
            out.push_str(if i == j || allowed(i, j) { ". " } else { "X " });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn grids_mark_blocked_cells() {
        let names = vec!["x/a".to_string(), "x/b".to_string()];
        let g = super::format_grid(&names, |i, _| i == 0);
        assert_eq!(g, "     a b \nx/a  . . \nx/b  X . \n");
    }
}
