fn main() {
    let path = std::env::args().nth(1).unwrap();
    let plan = rill::cli::load_plan(std::path::Path::new(&path)).unwrap();
    let mut line = String::new();
    for w in 0..3 {
        let p = rill::runtime::recovery::committed_progress(&plan.job.brokers, &plan.job, w).unwrap();
        line += &format!("w{w}={p:?} ");
    }
    println!("{line}");
}
