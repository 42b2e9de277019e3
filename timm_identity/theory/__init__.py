"""The paper's theory as runnable, checked code (Sections 2 and 3)."""
