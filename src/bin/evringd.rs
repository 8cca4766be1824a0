fn main() {
    println!("evringd: not built yet");
}
