//! Weight sharing against an independent implementation: scikit-learn's KMeans on the
//! same 50,000 Laplace-distributed weights (`scripts/make_kmeans_fixture.py`).

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use slimnn::quant::{KMeansInit, KMeansQuantizer, QuantContext, Quantizer};

fn fixture() -> (ArrayD<f32>, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = std::fs::read(dir.join("kmeans_laplace.bin")).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kmeans_laplace.json")).unwrap())
            .unwrap();
    (
        ArrayD::from_shape_vec(IxDyn(&[values.len()]), values).unwrap(),
        json,
    )
}

fn sse(q: &dyn Quantizer, w: &ArrayD<f32>) -> f64 {
    let back = q
        .quantize(w, &QuantContext::new())
        .unwrap()
        .dequantize::<f32>();
    w.iter()
        .zip(back.iter())
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum()
}

#[test]
fn optimal_codebooks_are_never_worse_than_scikit_learn() {
    let (w, json) = fixture();
    for k in [4usize, 16, 64] {
        let reference = json["cases"][k.to_string()]["sse"].as_f64().unwrap();
        let optimal = sse(&KMeansQuantizer::optimal(k).unwrap(), &w);
        // Centroids are stored as f32, hence the small slack.
        assert!(
            optimal <= reference * (1.0 + 1e-6),
            "k={k}: optimal {optimal} vs scikit-learn {reference}"
        );
        let lloyd = sse(&KMeansQuantizer::lloyd(k, KMeansInit::Linear).unwrap(), &w);
        // The same algorithm from the same start lands where scikit-learn's does.
        assert!(
            (lloyd - reference).abs() <= 1e-3 * reference,
            "k={k}: Lloyd {lloyd} vs scikit-learn {reference}"
        );
        println!("k={k}: optimal {optimal:.6e}, Lloyd {lloyd:.6e}, scikit-learn {reference:.6e}");
    }
}
