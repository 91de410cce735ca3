use atoll::Events;

#[derive(Events)]
pub struct NotAnEnum {}

#[derive(Events)]
pub enum Empty {}

#[derive(Events)]
pub enum Shapes {
    Unit,
    Named { a: u32 },
    Two(u32, u32),
}

fn main() {}
