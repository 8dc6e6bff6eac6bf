"""Tools an operator or ``make run`` starts by hand: the dead-letter CLI, the embedded Redis, Flower."""
