//! The coordinates of a 2-D map for users' own plots: `[N, 2]` f32 `.npy` (NumPy's
//! `np.load`) and a CSV of `x, y, label, class, path`, one row per image in feature order.

use std::io::Write;
use std::path::Path;

/// Writes `points` as a `[N, 2]` f32 `.npy` at `path`.
///
/// # Errors
/// A file that cannot be written (the message names it).
pub fn write_coords_npy(path: &Path, points: &[[f64; 2]]) -> std::io::Result<()> {
    let flat: Vec<f32> = points.iter().flatten().map(|&v| v as f32).collect();
    tch::Tensor::from_slice(&flat)
        .view([points.len() as i64, 2])
        .write_npy(path)
        .map_err(|e| std::io::Error::other(format!("writing {}: {e}", path.display())))
}

/// Writes `x,y,label,class,path` rows at `path`: `class` is `classes[label]` (empty when there
/// is none), `path` the image path (empty when unknown). Fields holding a comma, quote or line
/// break are quoted (RFC 4180).
///
/// # Errors
/// A file that cannot be written (the message names it).
pub fn write_coords_csv(
    path: &Path,
    points: &[[f64; 2]],
    labels: &[i64],
    classes: &[String],
    paths: &[String],
) -> std::io::Result<()> {
    let named =
        |e: std::io::Error| std::io::Error::other(format!("writing {}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(named)?);
    let mut rows = || -> std::io::Result<()> {
        writeln!(out, "x,y,label,class,path")?;
        for (i, (p, &l)) in points.iter().zip(labels).enumerate() {
            let class = usize::try_from(l)
                .ok()
                .and_then(|c| classes.get(c))
                .map_or("", String::as_str);
            let image = paths.get(i).map_or("", String::as_str);
            writeln!(
                out,
                "{},{},{l},{},{}",
                p[0],
                p[1],
                field(class),
                field(image)
            )?;
        }
        out.flush()
    };
    rows().map_err(named)
}

/// One CSV field, quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_follow_the_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        let classes = vec!["cat".to_string(), "a,b".into()];
        let paths = vec!["x/1.png".to_string(), "say \"hi\".png".into()];
        write_coords_csv(&path, &[[0.5, -1.0], [2.0, 3.0]], &[0, 1], &classes, &paths).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "x,y,label,class,path\n0.5,-1,0,cat,x/1.png\n2,3,1,\"a,b\",\"say \"\"hi\"\".png\"\n"
        );
        let npy = dir.path().join("c.npy");
        write_coords_npy(&npy, &[[0.5, -1.0], [2.0, 3.0]]).unwrap();
        let t = tch::Tensor::read_npy(&npy).unwrap();
        assert_eq!(t.size(), [2, 2]);
        assert_eq!(
            Vec::<f32>::try_from(&t.view([-1])).unwrap(),
            [0.5, -1.0, 2.0, 3.0]
        );
    }
}
