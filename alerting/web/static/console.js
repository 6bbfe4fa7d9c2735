// Small progressive enhancements for the console. Every page works without this file.
"use strict";
// Buttons with data-confirm ask before their form is sent (a red warning, a cancel).
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const form = event.target;
  const question = (button && button.dataset.confirm) || form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
