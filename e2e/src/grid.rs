//! Reachability grids as people read them: rows are clients, columns servers, `.` reachable,
//! `X` blocked.

use std::collections::BTreeSet;

/// Prints a reachability grid in the conformance catalogue's layout: rows are clients,
/// columns servers, `.` reachable, `X` blocked; the diagonal reads `.`. Columns are headed by
/// the last character of each name (`x/a` → `a`) when those are all different, else by
/// number, with the rows numbered to match.
pub fn format_grid(names: &[String], allowed: impl Fn(usize, usize) -> bool) -> String {
    let lasts: Vec<String> = names
        .iter()
        .map(|n| n.chars().last().map(String::from).unwrap_or_default())
        .collect();
    let numbered = lasts.iter().collect::<BTreeSet<_>>().len() != names.len();
    let heads: Vec<String> = if numbered {
        (1..=names.len()).map(|i| i.to_string()).collect()
    } else {
        lasts
    };
    let cell = heads.iter().map(String::len).max().unwrap_or(1);
    let labels: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if numbered {
                format!("{:>cell$} {n}", i + 1)
            } else {
                n.clone()
            }
        })
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    let mut out = format!("{:width$}  ", "");
    for h in &heads {
        out.push_str(&format!("{h:>cell$} "));
    }
    out.push('\n');
    for (i, l) in labels.iter().enumerate() {
        out.push_str(&format!("{l:width$}  "));
        for j in 0..names.len() {
            let c = if i == j || allowed(i, j) { "." } else { "X" };
            out.push_str(&format!("{c:>cell$} "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_grid;

    #[test]
    fn grids_mark_blocked_cells() {
        let names = vec!["x/a".to_string(), "x/b".to_string()];
        let g = format_grid(&names, |i, _| i == 0);
        assert_eq!(g, "     a b \nx/a  . . \nx/b  X . \n");
    }

    #[test]
    fn grids_number_columns_whose_names_end_alike() {
        let names = vec!["shop/web-1".to_string(), "shop/db-1".to_string()];
        let g = format_grid(&names, |_, j| j == 0);
        assert_eq!(
            g,
            "              1 2 \n1 shop/web-1  . X \n2 shop/db-1   . . \n"
        );
    }
}
