//! The greyspf binary: hands argv to the library and turns the outcome into an exit code.

fn main() {
    std::process::exit(greyspf::app::main(std::env::args_os()));
}
