// Keyboard shortcuts for the judgment forms, and focus after htmx swaps in new content.
//
// The pages work without this file. It only maps keys to controls already on the page, each marked
// with data-key, so every shortcut has a visible control that a mouse or Tab reaches as well.
(function () {
  "use strict";

  function isTextEntry(element) {
    if (!element) return false;
    if (element.isContentEditable || element.tagName === "TEXTAREA" || element.tagName === "SELECT") return true;
    return element.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(element.type);
  }

  function activate(control) {
    if (control.tagName === "TEXTAREA") {
      control.focus();
    } else if (control.type === "radio") {
      control.checked = true;
      control.focus();
    } else {
      // Checkboxes toggle and buttons act exactly as if clicked, so htmx and the form see a real click.
      control.click();
    }
  }

  document.addEventListener("keydown", function (event) {
    const form = document.getElementById("judge-form");
    if (!form || event.altKey || event.isComposing) return;
    const target = event.target;
    if (isTextEntry(target)) {
      // In a text box keys type text; Escape leaves it so the shortcuts work again, and
      // Ctrl+Enter submits without leaving it.
      if (event.key === "Escape") {
        target.blur();
        event.preventDefault();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && form.contains(target)) {
        event.preventDefault();
        form.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    if (event.key === "Enter") {
      // Enter on a link, button or disclosure keeps its own meaning.
      if (target.closest && target.closest("a, button, summary")) return;
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.key.length !== 1) return;
    const control = document.querySelector('[data-key="' + CSS.escape(event.key.toLowerCase()) + '"]');
    if (control && !control.disabled) {
      event.preventDefault();
      activate(control);
    }
  });

  // After a swap, move focus to the new content's marked element so keyboard and screen-reader
  // users continue from the new comparison instead of from a removed node.
  document.addEventListener("htmx:afterSwap", function () {
    showRequestError("");
    const next = document.querySelector("[data-autofocus]");
    if (next && !next.contains(document.activeElement)) next.focus({ preventScroll: false });
  });

  // htmx leaves the page as it was when a request fails, which would look like a lost click; say
  // instead that nothing was saved, so the annotator submits again (a repeat is stored once).
  function showRequestError(text) {
    let alert = document.getElementById("request-error");
    if (!text) {
      if (alert) alert.remove();
      return;
    }
    if (!alert) {
      alert = document.createElement("p");
      alert.id = "request-error";
      alert.className = "notice error";
      alert.setAttribute("role", "alert");
      document.getElementById("main").prepend(alert);
    }
    alert.textContent = text;
  }

  document.addEventListener("htmx:responseError", function (event) {
    showRequestError(event.detail.xhr.getResponseHeader("X-Error-Message") ||
      "The server could not handle that request, so nothing was saved. Please try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showRequestError("The server could not be reached, so nothing was saved. Check your connection and try again.");
  });
})();
