fn main() {
    let t = std::env::args().nth(1).unwrap();
    println!("{:?}", rill::connectors::kafka_admin::watermarks("127.0.0.1:9092", &t, 2));
    println!("{:?}", rill::connectors::kafka_admin::end_offsets("127.0.0.1:9092", &t, 2));
}
