//! The little linear algebra the entity model needs: column statistics, a
//! symmetric eigen-decomposition (cyclic Jacobi: exact enough and simple
//! for a few dozen metrics), projections and quantiles.

// Matrix code reads best with the indices written out.
#![allow(clippy::needless_range_loop)]

/// Each column's mean and standard deviation (plus a small floor, so a
/// flat metric divides safely).
pub fn mean_sd(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let m = rows.first().map_or(0, Vec::len);
    let n = rows.len().max(1) as f64;
    let mean: Vec<f64> = (0..m)
        .map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / n)
        .collect();
    let sd = (0..m)
        .map(|k| {
            let v = rows.iter().map(|r| (r[k] - mean[k]).powi(2)).sum::<f64>() / n;
            v.sqrt() + 1e-3
        })
        .collect();
    (mean, sd)
}

/// The principal directions of `rows` (already centred and scaled) that
/// together hold `variance` of their total variance, largest first.
pub fn principal(rows: &[Vec<f64>], variance: f64) -> Vec<Vec<f64>> {
    let m = rows.first().map_or(0, Vec::len);
    let n = rows.len().max(1) as f64;
    let mut cov = vec![vec![0.0; m]; m];
    for r in rows {
        for i in 0..m {
            for j in i..m {
                cov[i][j] += r[i] * r[j];
            }
        }
    }
    for i in 0..m {
        for j in i..m {
            cov[i][j] /= n;
            cov[j][i] = cov[i][j];
        }
    }
    let (values, vectors) = jacobi(cov);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let mut kept = Vec::new();
    let mut held = 0.0;
    for &i in &order {
        if total <= 0.0 || held >= variance * total {
            break;
        }
        held += values[i].max(0.0);
        kept.push((0..m).map(|r| vectors[r][i]).collect());
    }
    kept
}

/// `z` minus its projection onto the rows of `basis` (orthonormal).
pub fn residual(basis: &[Vec<f64>], z: &[f64]) -> Vec<f64> {
    let mut r = z.to_vec();
    for v in basis {
        let c: f64 = v.iter().zip(z).map(|(a, b)| a * b).sum();
        for (x, a) in r.iter_mut().zip(v) {
            *x -= c * a;
        }
    }
    r
}

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric matrix.
pub fn jacobi(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}
