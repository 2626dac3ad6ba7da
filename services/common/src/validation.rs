//! Business rules more than one service checks: the order service and the saga orchestrator
//! accept exactly the same orders.

use rust_decimal::Decimal;

/// Checks an order's fields; the error lists every problem, separated by `; `.
pub fn check_order(
    customer_id: &str,
    product_id: &str,
    quantity: i64,
    total_amount: Decimal,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if customer_id.trim().is_empty() {
        problems.push("customer_id must not be empty");
    }
    if product_id.trim().is_empty() {
        problems.push("product_id must not be empty");
    }
    if quantity <= 0 {
        problems.push("quantity must be greater than 0");
    }
    // Far above any real order, far below overflow in stock arithmetic.
    if quantity > 1_000_000_000 {
        problems.push("quantity is too large");
    }
    if total_amount <= Decimal::ZERO {
        problems.push("total_amount must be greater than 0");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
